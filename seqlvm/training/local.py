"""The same optimisation step as the Ray Train loop, in a plain single-process PyTorch loop: the baseline of
the throughput benchmark and a quick way to train small models in benchmarks and tests."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from pipelines.errors import SeqlvmError
from pipelines.stream import local_batches
from seqlvm.evaluation import TOTAL_KEYS, add_totals, summarize
from seqlvm.models import SequenceModel
from seqlvm.training.spec import TrainConfig
from seqlvm.training.step import make_optimizer, schedule_weight, take_step


def train_locally(model: SequenceModel, sequences: list[np.ndarray], cfg: TrainConfig, steps: int,
                  on_log: Callable[[int, dict], None] | None = None, device: str = "cpu") -> dict:
    """Train for `steps` optimiser steps over shuffled epochs of `sequences`. Returns the last logged window's
    metrics plus tokens/sec over the whole run."""
    torch.manual_seed(cfg.seed)
    device = torch.device(device)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.mixed_precision == "fp16" else None
    step, epoch, tokens, started = 0, 0, 0.0, time.time()
    window = {k: 0.0 for k in TOTAL_KEYS}
    metrics: dict = {}
    while step < steps:
        for batch in local_batches(sequences, cfg.batch_size, cfg.bucket_factor, seed=cfg.seed + epoch):
            weight = schedule_weight(step + 1, cfg)
            result = take_step(model, optimizer, batch, weight, cfg, device, scaler)
            step += 1
            if result.failure is not None:
                raise SeqlvmError(f"step {step}: {result.failure}")
            if result.totals is not None:
                add_totals(window, result.totals)
                tokens += float(result.totals["steps"])
            if step % cfg.log_every == 0 or step == steps:
                metrics = {**summarize(window), "kl_weight": weight}
                if on_log:
                    on_log(step, metrics)
                window = {k: 0.0 for k in TOTAL_KEYS}
            if step >= steps:
                break
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    metrics["tokens_per_sec"] = tokens / (time.time() - started)
    return metrics
