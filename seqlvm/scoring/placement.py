"""Where a scoring job runs: in this process, or as a Ray Data pipeline whose model replicas are actors. Both call
the same `Scorer` on the same rows, so both give the same scores, row for row."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa

from seqlvm.scoring.job import ScoreJob
from seqlvm.scoring.rows import piece_tables, read_pieces
from seqlvm.scoring.scorer import Scorer


@dataclass(frozen=True)
class InProcess:
    """Each batch in turn, in this process, with the model already loaded here (on `device`)."""
    device: str = "cpu"

    def tables(self, job: ScoreJob) -> Iterator[pa.Table]:
        scorer = Scorer(job.loaded, job.samples, job.seed, self.device)
        for rows in piece_tables(job.dataset, job.pieces):
            yield scorer(rows)


@dataclass(frozen=True)
class OnRay:
    """Ray Data: the pieces of the split are read by tasks and scored by `replicas` actors, each holding the model
    (on a GPU of its own when the cluster has GPUs, else on a CPU), on the Ray this process has joined or that
    `start` starts (called at the first job, once the input has been checked)."""
    replicas: int = 1
    start: Callable[[], object] | None = None

    def tables(self, job: ScoreJob) -> Iterator[pa.Table]:
        import ray
        import ray.data

        if self.start is not None:
            self.start()
        if not job.pieces:
            return
        pieces = ray.data.from_items([dataclasses.asdict(piece) for piece in job.pieces],
                                     override_num_blocks=len(job.pieces))
        # One piece a read task, so each replica gets pieces of its own. Reading is a small share of the work: the
        # tasks reserve no CPU, so replicas may hold every CPU without starving them (a silent hang otherwise),
        # and at most `replicas` run at once (unbounded, Ray starts a worker process for each).
        rows = pieces.map_batches(read_pieces, fn_kwargs={"dataset": job.dataset}, batch_size=1,
                                  batch_format="pyarrow", num_cpus=0,
                                  compute=ray.data.TaskPoolStrategy(size=self.replicas))
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
        scores = rows.map_batches(Scorer, fn_constructor_kwargs={"loaded": job.for_replicas(), "samples": job.samples,
                                                                 "seed": job.seed},
                                  batch_size=job.batch_size, batch_format="pyarrow", num_cpus=1,
                                  num_gpus=1 if gpus else None, compute=ray.data.ActorPoolStrategy(size=self.replicas))
        scores.context.execution_options.preserve_order = True
        yield from scores.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
