"""How a training split reaches the workers: materialised once when small, streamed otherwise."""
from __future__ import annotations

from pipelines.dataset import PreparedDataset

# A training split up to this size in memory is materialised in the object store once: each epoch is a new
# execution of the dataset, and re-reading small files costs seconds an epoch, which dominates on corpora of a
# few hundred sequences (JSB Chorales: 17 steps an epoch).
MATERIALISE_BYTES = 64 * 2**20


def training_dataset(dataset: PreparedDataset, materialise_bytes: int = MATERIALISE_BYTES):
    """The training split in a new random shard order each epoch (rows are shuffled further in the workers'
    local buffers): from memory when it is small, otherwise streamed with the order of the shard files shuffled
    at each read (`randomize_block_order` would hold every block of the epoch in the object store at once)."""
    train = dataset.splits["train"]
    values = train.steps if dataset.is_text else train.steps * dataset.frame_dim
    if values * 4 <= materialise_bytes:
        return dataset.ray_dataset("train").materialize().randomize_block_order()
    return dataset.ray_dataset("train", shuffle_files=True)
