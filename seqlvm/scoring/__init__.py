"""Batch scoring of a split: every sequence's ELBO and importance-weighted log-likelihood, with its position in
the split, in this process or as a Ray Data pipeline of model replicas. `seqlvm score` writes the rows to a Parquet
file; `seqlvm evaluate` sums them into its importance-weighted NLL. The parts: a split's rows and pieces (`rows`), the
scoring function (`scorer`), the job and its progress (`job`), where it runs (`placement`), the output (`output`)."""
from seqlvm.scoring.job import BATCH_ROWS, ScoreJob, importance_weighted, scored
from seqlvm.scoring.output import check_out, read_description, write_scores
from seqlvm.scoring.placement import InProcess, OnRay
from seqlvm.scoring.rows import ROW
from seqlvm.scoring.scorer import Scorer, row_seed

__all__ = ["BATCH_ROWS", "ROW", "InProcess", "OnRay", "ScoreJob", "Scorer", "check_out", "importance_weighted",
           "read_description", "row_seed", "scored", "write_scores"]
