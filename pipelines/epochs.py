"""The order of every training epoch, planned from the training split's row lengths alone, identically in every
worker: which windows of consecutive rows each worker reads, and which rows of a window form each of its batches.
A run's position (epoch, steps taken in it, world size) then says exactly which batches are still to come, so a
resumed run continues its interrupted epoch at its next unseen batch.

An epoch's windows are permuted by a generator seeded by (seed, epoch); window k goes to worker k % world_size,
so a worker reads its own windows only. Within a window the rows are shuffled by a generator seeded by (seed,
epoch, window) and cut into batches: of `batch_size` rows, or, with a token budget, of as many rows as keep
(rows) x (longest padded row) within `max_tokens`. When bucketing (bucket_factor > 1 or a token budget), the
shuffled rows are first sorted by length and the batches then shuffled, so batches waste little on padding
while their order stays random. Every worker takes as many steps as the worker with the most batches; the
others fill the rest of the epoch with steps that carry no weight (see `EpochPlan.real_workers`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipelines.errors import SeqlvmError


@dataclass(frozen=True)
class Batching:
    """How a split is cut into batches; the training configuration's fields of the same names."""
    batch_size: int
    bucket_factor: int = 1
    max_tokens: int | None = None
    seed: int = 0

    @property
    def bucketed(self) -> bool:
        return self.bucket_factor > 1 or self.max_tokens is not None

    def window_rows(self, mean_length: float) -> int:
        """Rows per window: bucket_factor batches' worth, in rows or, with a token budget, in tokens."""
        if self.max_tokens is None:
            return self.bucket_factor * self.batch_size
        return self.bucket_factor * max(1, int(self.max_tokens // max(mean_length, 1.0)))


def check_token_budget(longest: int, max_tokens: int | None) -> None:
    if max_tokens is not None and longest > max_tokens:
        raise SeqlvmError(f"train.max_tokens={max_tokens} is smaller than the longest training sequence "
                          f"({longest} steps padded); raise it to at least {longest}")


def cut_batches(lengths: np.ndarray, batching: Batching, rng: np.random.Generator) -> list[np.ndarray]:
    """A window's rows (positions in `lengths`) in batches, in the order they are trained on."""
    order = rng.permutation(len(lengths))
    if batching.bucketed:
        order = order[np.argsort(lengths[order], kind="stable")]
    if batching.max_tokens is None:
        batches = [order[i:i + batching.batch_size] for i in range(0, len(order), batching.batch_size)]
    else:
        batches = _within_budget(order, lengths, batching.max_tokens)
    if batching.bucketed:
        rng.shuffle(batches)
    return batches


def _within_budget(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Rows sorted by length, cut greedily: each batch takes rows while (rows) x (its longest) fits."""
    batches, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or (i - start + 1) * lengths[order[i]] > max_tokens:
            batches.append(order[start:i])
            start = i
    return batches


@dataclass(frozen=True)
class Window:
    """Consecutive rows [start, stop) of one shard; `index` is its place among the split's windows."""
    index: int
    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class EpochPosition:
    """Where a run is: its epoch, the steps it has taken in it, and the world size that plan was made for."""
    epoch: int
    steps: int
    world: int

    def resumed_by(self, world: int) -> "EpochPosition":
        """The position a run of `world` workers continues from: the same one, or its epoch's start if the world
        size changed (the epoch's batches were dealt to a different number of workers)."""
        return self if world == self.world else EpochPosition(self.epoch, 0, world)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    world: int
    windows: tuple[tuple[Window, ...], ...]  # each worker's, in reading order
    batch_counts: tuple[int, ...]  # each worker's batches

    @property
    def steps(self) -> int:
        """Steps every worker takes this epoch: as many as the worker with the most batches has."""
        return max(self.batch_counts)

    def real_workers(self, step: int) -> int:
        """Workers with a batch at this step (0-based) of the epoch; the others take a step of weight 0."""
        return sum(count > step for count in self.batch_counts)

    def remaining(self, rank: int, steps_taken: int, counts: np.ndarray) -> list[tuple[Window, int]]:
        """A worker's windows still (partly) unread after `steps_taken` steps, each with how many of its first
        batches were already taken; `counts` are the windows' batch counts (`EpochPlanner.counts`)."""
        left, skip = [], steps_taken
        for window in self.windows[rank]:
            count = int(counts[window.index])
            if skip >= count:
                skip -= count
                continue
            left.append((window, skip))
            skip = 0
        return left


class EpochPlanner:
    """Plans the epochs of a split from its shards' padded row lengths."""

    def __init__(self, lengths: list[np.ndarray], batching: Batching, world: int):
        self.lengths, self.batching, self.world = lengths, batching, world
        check_token_budget(max((int(s.max(initial=0)) for s in lengths), default=0), batching.max_tokens)
        rows = sum(len(s) for s in lengths)
        size = batching.window_rows(sum(float(s.sum()) for s in lengths) / max(rows, 1))
        starts = [(shard, start) for shard, s in enumerate(lengths) for start in range(0, len(s), size)]
        self.windows = tuple(Window(i, shard, start, min(start + size, len(lengths[shard])))
                             for i, (shard, start) in enumerate(starts))

    def window_lengths(self, window: Window) -> np.ndarray:
        return self.lengths[window.shard][window.start:window.stop]

    @cached_property
    def counts(self) -> np.ndarray:
        """Batches per window: the same every epoch (a fixed batch size, or a budget cut of the window's sorted
        lengths, which shuffling does not change)."""
        if self.batching.max_tokens is None:
            return np.array([math.ceil((w.stop - w.start) / self.batching.batch_size) for w in self.windows])
        rng = np.random.default_rng(0)
        return np.array([len(cut_batches(self.window_lengths(w), self.batching, rng)) for w in self.windows])

    def plan(self, epoch: int) -> EpochPlan:
        order = np.random.default_rng([self.batching.seed, epoch]).permutation(len(self.windows))
        windows = tuple(tuple(self.windows[k] for k in order[rank::self.world]) for rank in range(self.world))
        counts = tuple(int(sum(self.counts[w.index] for w in mine)) for mine in windows)
        return EpochPlan(epoch, self.world, windows, counts)

    def batches(self, window: Window, epoch: int) -> list[np.ndarray]:
        """A window's batches this epoch, as row positions in the window."""
        rng = np.random.default_rng([self.batching.seed, epoch, window.index])
        return cut_batches(self.window_lengths(window), self.batching, rng)
