"""The optimiser step's guard against non-finite values: a finite loss with an infinite gradient is not applied,
so the weights never become NaN; a normal step is. A step's errors: one a retry cannot fix, in the forward pass,
the backward pass or the optimiser step, ends the run; any other is raised for Ray Train to retry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from seqlvm.models import build_model
from seqlvm.models.base import ModelOutput
from seqlvm.training import step
from seqlvm.training.spec import TrainConfig
from seqlvm.training.step import all_weights_finite, apply_gradients, deterministic_error, take_step


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
    assert not deterministic_error(RuntimeError("CUDA error: uncorrectable ECC error encountered"))
    assert not deterministic_error(RuntimeError("NCCL error in: ProcessGroupNCCL.cpp, unhandled system error"))
    assert not deterministic_error(torch.distributed.DistError("store timed out"))
    assert not deterministic_error(OSError("disk full"))


class Squares(torch.nn.Module):
    """A one-weight model whose loss is w² on every step, with a fault placed in one part of the step."""

    def __init__(self, fault: str | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0]))
        self.fault = fault

    def forward(self, batch, kl_weight):
        if self.fault == "forward":
            raise ValueError("hidden_size must be greater than zero")
        square = self.weight * self.weight
        if self.fault == "backward in place":
            used = torch.sigmoid(self.weight)
            loss = used.sum()
            used.add_(1.0)  # sigmoid's backward needs its output: autograd refuses the modified one
        elif self.fault == "backward out of memory":
            loss = OutOfMemoryInBackward.apply(square).sum()
        else:
            loss = square.sum()
        return ModelOutput(loss, {"recon": loss.detach(), "kl": torch.zeros(()), "sequences": torch.ones(()),
                                  "steps": torch.ones(())})


class OutOfMemoryInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


class TestTakeStep:
    cfg = TrainConfig(mixed_precision="none")
    batch = {"lengths": torch.tensor([3])}

    def step(self, model, optimizer=None, agree=None, explain=None):
        optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
        kwargs = {k: v for k, v in (("agree", agree), ("explain", explain)) if v}
        return take_step(model, optimizer, self.batch, 1.0, self.cfg, torch.device("cpu"), **kwargs)

    def test_a_normal_step_is_taken(self):
        model = Squares()
        result = self.step(model)
        assert result.failure is None and result.totals["recon"].item() == 1.0
        assert model.weight.item() == pytest.approx(1.0 - 0.1 * 2.0)

    @pytest.mark.parametrize("loss_scale", [0.0, 2.0])
    def test_the_gradient_is_the_loss_scaled_by_the_workers_share(self, loss_scale):
        """A worker without a batch of its own steps with weight 0; with 2 workers of which one has data, the
        other's loss counts twice, so DDP's average of the two gradients is that worker's own."""
        model = Squares()
        result = take_step(model, torch.optim.SGD(model.parameters(), lr=0.1), self.batch, 1.0, self.cfg,
                           torch.device("cpu"), loss_scale=loss_scale)
        assert result.failure is None and result.totals["recon"].item() == 1.0
        assert model.weight.item() == pytest.approx(1.0 - 0.1 * 2.0 * loss_scale)

    def test_a_step_without_data_of_its_own_is_finite_whatever_its_stand_in_batch_gives(self):
        model = Squares()
        model.weight.data.fill_(float("nan"))
        result = take_step(model, torch.optim.SGD(model.parameters(), lr=0.1), self.batch, 1.0, self.cfg,
                           torch.device("cpu"), loss_scale=0.0)
        assert result.failure is None and result.totals is not None  # taken, not skipped
        assert model.weight.grad.item() == 0.0

    @pytest.mark.parametrize("fault, cause", [
        ("forward", "ValueError: hidden_size must be greater than zero"),
        ("backward in place", "RuntimeError: one of the variables needed for gradient computation has been "
                              "modified by an inplace operation")])
    def test_an_error_a_retry_cannot_fix_fails_the_step_and_leaves_the_weight(self, fault, cause):
        model = Squares(fault)
        result = self.step(model)
        assert result.totals is None and result.failure.startswith(cause)
        assert "\n" not in result.failure and model.weight.item() == 1.0

    def test_an_optimiser_that_cannot_step_fails_the_step(self):
        model = Squares()
        result = self.step(model, torch.optim.SparseAdam(model.parameters()))
        assert result.totals is None and "SparseAdam does not support dense gradients" in result.failure
        assert "\n" not in result.failure and model.weight.item() == 1.0

    def test_an_error_a_retry_may_fix_is_raised_for_ray_train(self):
        with pytest.raises(RuntimeError, match="out of memory"):
            self.step(Squares("backward out of memory"))

    def test_a_step_that_failed_on_another_worker_fails_here_too_without_stepping(self):
        model = Squares()
        result = self.step(model, agree=lambda *checks: [False, *checks[1:]])
        assert result.failure == "a step failed on another worker" and model.weight.item() == 1.0

    def test_a_step_that_failed_elsewhere_fails_here_with_the_cause_found_there(self):
        model, asked = Squares(), []

        def explain(own):
            asked.append(own)
            return "ValueError: hidden_size must be greater than zero"

        result = self.step(model, agree=lambda *checks: [False, *checks[1:]], explain=explain)
        assert asked == [None] and model.weight.item() == 1.0
        assert result.failure == "ValueError: hidden_size must be greater than zero"

    def test_a_backward_error_on_another_worker_is_agreed_after_the_backward_pass(self):
        calls = []

        def agree(*checks):
            calls.append(checks)
            return [False] if len(calls) == 2 else list(checks)

        result = self.step(Squares(), agree=agree)
        assert calls == [(True, True), (True,)] and result.failure == "a step failed on another worker"
