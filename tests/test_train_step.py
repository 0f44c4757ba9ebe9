"""The optimiser step's guard against non-finite values: a finite loss with an infinite gradient is not applied,
so the weights never become NaN; a normal step is."""
from __future__ import annotations

import pytest
import torch

from seqlvm.training.spec import TrainConfig
from seqlvm.training.worker import all_weights_finite, apply_gradients


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
