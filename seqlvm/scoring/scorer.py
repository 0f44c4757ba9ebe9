"""The one scoring function, in this process or in a Ray Data actor (a model replica): a batch of a split's rows in,
their scores out. Each row's importance samples come from the random stream seeded by (seed, row) alone, and each
row is scored on its own (its K samples are the batch), so a row scores the same whichever batch, replica or
process scores it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from seqlvm.checkpoint import LoadedModel
from seqlvm.models import SequenceModel
from seqlvm.operations import ModelOperations
from seqlvm.scoring.rows import ROW

SCORES = ("elbo", "iw_ll", "elbo_per_step", "iw_ll_per_step")  # nats, and nats per step


def row_seed(seed: int, row: int) -> int:
    """The seed of one row's draws: independent streams for every (seed, row) pair."""
    return int(np.random.SeedSequence([seed, row]).generate_state(1, np.uint64)[0])


def scores_schema(model: SequenceModel) -> pa.Schema:
    """The columns of a model's scores: `kl` and `posterior_mean` only with a global latent."""
    fields = [pa.field(ROW, pa.int64()), pa.field("steps", pa.int64()),
              *(pa.field(name, pa.float64()) for name in SCORES)]
    if model.has_global_latent:
        fields += [pa.field("kl", pa.float64()), pa.field("posterior_mean", pa.list_(pa.float32()))]
    return pa.schema([*fields, pa.field("samples", pa.int64())])


class Scorer:
    """A model replica: scores batches of rows (`row` and the dataset's sequence column) with `samples` importance
    samples each. On a GPU when this process has one, unless `device` says otherwise."""

    def __init__(self, loaded: LoadedModel, samples: int, seed: int, device: str | None = None):
        import torch

        self.operations = ModelOperations(loaded, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.layout = loaded.data.layout
        self.schema = scores_schema(loaded.model)
        self.samples, self.seed = samples, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        columns: dict[str, list] = {name: [] for name in self.schema.names}
        values = batch.column(self.layout.column).to_numpy(zero_copy_only=False)
        with torch.random.fork_rng():  # the caller's random stream stays as it was
            for row, value in zip(batch.column(ROW).to_pylist(), values):
                scores = self.operations.score_sequences([self.layout.decode(value)], self.samples,
                                                         row_seed(self.seed, row))
                columns[ROW].append(row)
                for name, column in scores.items():
                    columns[name].extend(column)
        return pa.table(columns, schema=self.schema)
