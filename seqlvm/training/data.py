"""How a training split reaches a worker: its epoch plan (pipelines/epochs.py), and the rows of its windows read
once into memory when the split is small, streamed through Ray Data otherwise (pipelines/epoch_reading.py)."""
from __future__ import annotations

from pipelines.dataset import PreparedDataset
from pipelines.epoch_reading import ShardsInMemory, StreamedWindows
from pipelines.epochs import Batching, EpochPlanner
from seqlvm.training.spec import TrainConfig

# A training split up to this size in memory is read whole by each worker, once, and kept: a Ray Data execution
# costs seconds of start-up an epoch, which dominates on corpora of a few hundred sequences (JSB Chorales: 17
# steps an epoch).
MATERIALISE_BYTES = 64 * 2**20
BYTES_PER_VALUE = 4  # token ids are int32, frames float32


def split_bytes(dataset: PreparedDataset) -> int:
    train = dataset.splits["train"]
    return (train.steps if dataset.is_text else train.steps * dataset.frame_dim) * BYTES_PER_VALUE


def batching_of(cfg: TrainConfig) -> Batching:
    return Batching(cfg.batch_size, cfg.bucket_factor, cfg.max_tokens, cfg.seed)


def epoch_planner(dataset: PreparedDataset, cfg: TrainConfig, world: int) -> EpochPlanner:
    """The planner of a run's epochs, from the training split's length columns (read once)."""
    return EpochPlanner(dataset.padded_lengths("train"), batching_of(cfg), world)


def window_source(dataset: PreparedDataset, planner: EpochPlanner, materialise_bytes: int = MATERIALISE_BYTES):
    """Where a worker reads its windows' rows: memory for a small split, Ray Data otherwise."""
    total = split_bytes(dataset)
    if total <= materialise_bytes:
        return ShardsInMemory(dataset)
    rows = sum(len(lengths) for lengths in planner.lengths)
    largest = max(window.stop - window.start for window in planner.windows)
    return StreamedWindows(dataset, window_bytes=max(1, total * largest // max(rows, 1)))
