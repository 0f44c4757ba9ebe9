"""The same optimisation step as the Ray Train loop, in a plain single-process PyTorch loop: the baseline of
the throughput benchmark and a quick way to train small models in benchmarks and tests."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from pipelines.stream import local_batches
from seqlvm.evaluation import TOTAL_KEYS, add_totals, summarize
from seqlvm.models import SequenceModel
from seqlvm.training.spec import TrainConfig
from seqlvm.training.step import apply_gradients, forward, make_optimizer, schedule_weight


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
            out = forward(model, batch, weight, cfg, device)
            step += 1
            if torch.isfinite(out.loss):
                apply_gradients(model, optimizer, out.loss, cfg, scaler)
                add_totals(window, out.totals)
                tokens += float(out.totals["steps"])
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
