"""A scoring job: which model scores which rows of which split, with how many importance samples from which seed;
its scores in row order with a progress bar, and the importance-weighted figures `seqlvm evaluate` sums from them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dataset import PreparedDataset
from pipelines.progress import task_progress
from seqlvm.checkpoint import LoadedModel
from seqlvm.evaluation import iw_metrics
from seqlvm.scoring.rows import Piece, split_pieces

# Rows are scored one at a time, so a small unit of work costs little and keeps replicas evenly busy: with 500
# samples a sentence takes a fraction of a second, and a unit of 64 left one of two replicas idle for a minute.
BATCH_ROWS = 16


@dataclass(frozen=True)
class ScoreJob:
    """The first `limit` rows (all without it) of a split of data like the model's training data, each scored with
    `samples` importance samples drawn from the stream of (`seed`, row). `batch_size` rows are a unit of work (a
    Ray Data block, a step of the progress bar); the scores do not depend on it."""
    loaded: LoadedModel
    dataset: PreparedDataset
    split: str = "test"
    samples: int = 500
    seed: int = 0
    batch_size: int = BATCH_ROWS
    limit: int | None = None

    @cached_property
    def pieces(self) -> list[Piece]:
        return split_pieces(self.dataset, self.split, self.batch_size, self.limit)

    @property
    def rows(self) -> int:
        return sum(piece.rows for piece in self.pieces)

    def for_replicas(self) -> LoadedModel:
        """The model as replicas get it: without the checkpoint's optimiser state and weights a second time."""
        return LoadedModel(self.loaded.model, self.loaded.data, {"path": self.loaded.payload.get("path")})


class Placement(Protocol):
    def tables(self, job: ScoreJob) -> Iterator[pa.Table]:
        """The job's scores, every row once, in row order."""


def scored(job: ScoreJob, where: Placement, console=None) -> Iterator[pa.Table]:
    """The job's scores in row order, as Arrow tables, with a progress bar on `console` (sequences scored, an ETA)."""
    with task_progress(console) as progress:
        task = progress.add_task(f"scoring {job.rows:,} sequences, {job.samples} importance samples each",
                                 total=job.rows)
        for table in where.tables(job):
            progress.advance(task, table.num_rows)
            yield table


def importance_weighted(job: ScoreJob, where: Placement, console=None) -> dict[str, float]:
    """The split's importance-weighted NLL, perplexity and log-likelihood per step, summed from its rows' scores."""
    steps, log_likelihoods = 0, []
    for table in scored(job, where, console):
        steps += pc.sum(table["steps"]).as_py() or 0
        log_likelihoods.extend(table["iw_ll"].to_pylist())
    # fsum is exact, so the total does not depend on how the rows arrived in tables
    return iw_metrics(math.fsum(log_likelihoods), len(log_likelihoods), steps)
