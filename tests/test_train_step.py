"""The optimiser step's guard against non-finite values: a finite loss with an infinite gradient is not applied,
so the weights never become NaN; a normal step is."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from seqlvm.models import build_model
from seqlvm.training import step
from seqlvm.training.spec import TrainConfig
from seqlvm.training.worker import all_weights_finite, apply_gradients, deterministic_error


def one_weight(value: float) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.tensor([value]))
    return weight, torch.optim.SGD([weight], lr=0.1)


def test_a_step_with_an_infinite_gradient_is_skipped_and_the_weights_stay_finite():
    weight, optimizer = one_weight(0.0)
    loss = torch.sqrt(weight).sum()  # 0 at w=0, but d/dw sqrt(w) is infinite there
    assert torch.isfinite(loss)
    assert not apply_gradients(torch.nn.ParameterList([weight]), optimizer, loss, TrainConfig())
    assert weight.item() == 0.0 and weight.grad is None
    assert all_weights_finite(torch.nn.ParameterList([weight]))


def test_a_finite_step_is_taken_and_clipped():
    weight, optimizer = one_weight(1.0)
    loss = (100.0 * weight).sum()  # gradient 100, clipped to the config's norm
    cfg = TrainConfig()
    assert apply_gradients(torch.nn.ParameterList([weight]), optimizer, loss, cfg)
    assert weight.item() == pytest.approx(1.0 - 0.1 * cfg.grad_clip, abs=1e-6)


def test_non_finite_weights_are_detected():
    weight, _ = one_weight(float("nan"))
    assert not all_weights_finite(torch.nn.ParameterList([weight]))


class TestPrecision:
    cpu = torch.device("cpu")

    def test_auto_takes_bf16_only_for_a_model_measured_under_it_on_a_cpu_with_native_bf16(self, monkeypatch):
        vae = build_model("sentence-vae", {"embedding_dim": 8, "hidden_dim": 8, "latent_dim": 2}, 20)
        dssm = build_model("dssm", {}, 20)  # its flows' triangular solve has no bf16 kernel
        monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: True)
        assert step.precision(TrainConfig(), self.cpu, vae) == torch.bfloat16
        assert step.precision(TrainConfig(), self.cpu, dssm) is None
        assert step.precision(TrainConfig(mixed_precision="none"), self.cpu, vae) is None
        assert step.precision(TrainConfig(mixed_precision="fp16"), self.cpu, vae) is None  # fp16: GPU only
        monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: False)
        assert step.precision(TrainConfig(), self.cpu, vae) is None
        assert step.precision(TrainConfig(mixed_precision="auto"), torch.device("cuda"), vae) is None

    def test_a_bf16_step_reports_the_float32_kl(self):
        vae = build_model("sentence-vae", {"embedding_dim": 8, "hidden_dim": 8, "latent_dim": 2}, 20)
        batch = collate([np.arange(4, 9), np.arange(5, 8)])
        out = step.forward(vae, batch, 1.0, TrainConfig(mixed_precision="bf16"), self.cpu)
        assert out.loss.dtype == torch.float32 and out.totals["kl"].dtype == torch.float32
        out.loss.backward()


def test_only_errors_a_retry_cannot_fix_end_a_run_at_once():
    assert deterministic_error(ValueError("hidden_size must be greater than zero"))
    assert deterministic_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert deterministic_error(SeqlvmError("hybrid-vae reads texts of at most 8 tokens, got 12"))
    assert not deterministic_error(torch.distributed.DistBackendError("Connection closed by peer"))
    assert not deterministic_error(RuntimeError("CUDA out of memory"))
    assert not deterministic_error(torch.distributed.DistError("store timed out"))
    assert not deterministic_error(OSError("disk full"))
