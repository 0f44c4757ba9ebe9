"""One optimisation step, shared by the Ray Train workers and the plain single-process loop: the KL weight's
schedule, the optimiser, mixed precision, the forward pass, the guarded gradient step, and the step that every
worker of a run takes, skips or fails together (`take_step`)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipelines.errors import SeqlvmError, root_cause
from seqlvm.models.base import SequenceModel
from seqlvm.objectives import kl_weight
from seqlvm.training.spec import TrainConfig


def schedule_weight(step: int, cfg: TrainConfig) -> float:
    return kl_weight(step, cfg.kl_anneal, rate=cfg.kl_anneal_rate, midpoint=cfg.kl_anneal_midpoint,
                     warmup_steps=cfg.kl_warmup_steps, ceiling=cfg.kl_weight, cycle_steps=cfg.kl_cycle_steps,
                     cycle_rise=cfg.kl_cycle_rise)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The fused kernel updates each parameter in one pass: on the CPU it made the sentence VAE's step with a 10k-word
    # vocabulary ~8% faster than the default per-tensor update (docs/results.md#training-speed-of-the-sentence-vae).
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def precision(cfg: TrainConfig, device: torch.device, model: SequenceModel) -> torch.dtype | None:
    """The dtype a training step's forward pass autocasts to, or None for full precision. `auto` takes bfloat16
    for a model that declares its step measured under it (`bf16_on_cpu`) on a CPU that computes bf16 natively
    (AMX or AVX512-BF16): the sentence VAE's step is ~1.3x faster there. Elsewhere, and on GPUs (where bf16
    measured no faster, docs/results.md#gpu), it keeps float32. Losses, KL terms and evaluations stay float32."""
    choice = cfg.mixed_precision
    if choice == "auto":
        choice = "bf16" if device.type == "cpu" and model.bf16_on_cpu and cpu_has_native_bf16() else "none"
    if choice == "fp16" and device.type != "cuda":
        choice = "none"
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


@functools.cache  # asked at every step
def cpu_has_native_bf16() -> bool:
    return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_amx_tile_supported",
                                                                       "_is_avx512_bf16_supported"))


def forward(model, batch: dict, weight: float, cfg: TrainConfig, device):
    """The training forward pass; `model` may be wrapped by DDP."""
    dtype = precision(cfg, device, getattr(model, "module", model))
    with torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext():
        return model({k: v.to(device) for k, v in batch.items()}, kl_weight=weight)


def apply_gradients(model, optimizer, loss: torch.Tensor, cfg: TrainConfig, scaler=None) -> bool:
    """Backward pass, gradient clipping and the optimiser step (with loss scaling for fp16). A finite loss can
    still give an infinite gradient: then the step is not taken, so the weights never become NaN. Under DDP the
    gradients are already averaged, so every worker decides alike. Returns whether the step was taken."""
    optimizer.zero_grad(set_to_none=True)
    if scaler:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if scaler:  # the scaler skips steps with non-finite gradients itself, and lowers its scale
        scaler.step(optimizer)
        scaler.update()
        return True
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def all_weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


RETRYABLE_SIGNS = ("out of memory", "CUDA error", "NCCL", "ECC error")


def deterministic_error(exc: Exception) -> bool:
    """Whether an error in a training step would recur on a retry: one the model's code raises on its input or
    configuration, in the forward pass, the backward pass or the optimiser step. Not a collective that lost a peer
    (a retry from the last checkpoint fixes that), nor running out of memory, which may not recur, nor a fault
    the GPU's runtime reports: it may be the device's, and after one the process's CUDA context is unusable, so
    only restarted workers can go on (the check before Ray runs the model on the CPU, where the code's own
    faults show as ordinary errors)."""
    if isinstance(exc, dist.DistError) or any(sign in str(exc) for sign in RETRYABLE_SIGNS):
        return False
    return isinstance(exc, (SeqlvmError, ValueError, TypeError, IndexError, KeyError, NotImplementedError,
                            ArithmeticError, AssertionError, RuntimeError))


def _on_one_worker(*checks: bool) -> list[bool]:
    return list(checks)


def _own_failure(failure: str | None) -> str | None:
    return failure


@dataclass
class StepResult:
    totals: dict[str, torch.Tensor] | None  # None when the step was not taken
    failure: str | None = None  # the one-line cause of an error a retry cannot fix: the run ends


def take_step(model, optimizer, batch: dict, weight: float, cfg: TrainConfig, device, scaler=None,
              agree: Callable[..., list[bool]] = _on_one_worker,
              explain: Callable[[str | None], str | None] = _own_failure, loss_scale: float = 1.0) -> StepResult:
    """A forward pass and, if its loss is finite, the guarded gradient step. `agree` tells whether each check
    passed on every worker: all workers skip a step or fail it together, or DDP would deadlock. An error a retry
    cannot fix becomes the result's failure, with its cause as `explain` finds it on whichever worker had it (every
    worker calls it when a step fails); any other error is raised, for Ray Train to restart the workers from the
    last checkpoint. The gradient is that of the loss times `loss_scale`: world/(workers with data) for a worker
    with a batch of its own, so that DDP's average is the mean over the real batches; 0 for a worker without one,
    whose step then gives a zero gradient and is finite whatever its stand-in batch's loss (a NaN there must not
    skip the other workers' step)."""
    error, finite, taken = None, False, False
    try:
        out = forward(model, batch, weight, cfg, device)
        finite = loss_scale == 0 or bool(torch.isfinite(out.loss).item())
    except Exception as exc:
        error = _unless_retryable(exc)
    no_error, all_finite = agree(error is None, finite)
    if no_error and all_finite:
        try:
            loss = out.loss * loss_scale if loss_scale else zero_gradient_loss(model)
            taken = apply_gradients(model, optimizer, loss, cfg, scaler)
        except Exception as exc:
            error = _unless_retryable(exc)
        no_error, = agree(error is None)
    if not no_error:
        cause = explain(root_cause(error) if error is not None else None)
        return StepResult(None, cause or "a step failed on another worker")
    return StepResult(out.totals if taken else None)


def zero_gradient_loss(model) -> torch.Tensor:
    """A loss whose gradient is 0 for every parameter: DDP's reducer still sees each one's gradient, and the
    workers' all-reduce goes ahead as in any step."""
    return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0


def _unless_retryable(exc: Exception) -> Exception:
    if not deterministic_error(exc):
        raise exc
    return exc
