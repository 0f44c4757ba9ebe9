"""Batches for training and evaluation: padding (collate), length bucketing, and the two ways to iterate a
split: streamed through Ray Data inside Train workers, or read locally with pyarrow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines.shards import read_manifest, split_files
from seqlvm.errors import SeqlvmError
from seqlvm.vocab import BOS_ID, EOS_ID, PAD_ID


def collate(sequences: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
    """Token-id sequences -> padded decoder inputs (<s> w1..wn), targets (w1..wn </s>) and lengths (n+1)."""
    sequences = list(sequences)
    lengths = torch.tensor([len(s) + 1 for s in sequences], dtype=torch.long)
    inputs = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.long)
    targets = torch.full_like(inputs, PAD_ID)
    for row, seq in enumerate(sequences):
        seq = torch.as_tensor(np.asarray(seq, dtype=np.int64))
        inputs[row, 0] = BOS_ID
        inputs[row, 1:len(seq) + 1] = seq
        targets[row, :len(seq)] = seq
        targets[row, len(seq)] = EOS_ID
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


def collate_frames(sequences: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
    """(T_i, D) frame sequences -> zero-padded `frames` (B, T, D) and `lengths` (B,)."""
    sequences = [torch.tensor(np.asarray(s, dtype=np.float32)) for s in sequences]  # a copy: Arrow's are read-only
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    frames = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
    for row, seq in enumerate(sequences):
        frames[row, :len(seq)] = seq
    return {"frames": frames, "lengths": lengths}


@dataclass(frozen=True)
class Layout:
    """How a prepared dataset's rows become batches: token ids (text) or flattened (T, D) frames."""
    column: str = "ids"
    frame_dim: int | None = None

    def decode(self, value) -> np.ndarray:
        if self.frame_dim is None:
            return np.asarray(value, dtype=np.int64)
        return np.asarray(value, dtype=np.float32).reshape(-1, self.frame_dim)

    def collate(self, sequences: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
        return collate(sequences) if self.frame_dim is None else collate_frames(sequences)


TEXT = Layout()


def layout_of(manifest: dict) -> Layout:
    return TEXT if manifest.get("modality", "text") == "text" else Layout("frames", int(manifest["frame_dim"]))


def bucketed(window: list[np.ndarray], batch_size: int, rng: np.random.Generator | None,
             collate_fn: Callable = collate) -> Iterator[dict]:
    """Sort a window of sequences by length, cut it into batches, and yield them in random order: batches of
    similar lengths waste little on padding while the order across batches stays random."""
    order = sorted(range(len(window)), key=lambda i: len(window[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    for idx in batches:
        yield collate_fn(window[i] for i in idx)


def windows_to_batches(windows: Iterable[list[np.ndarray]], batch_size: int, bucket_factor: int,
                       rng: np.random.Generator | None, layout: Layout = TEXT) -> Iterator[dict]:
    for window in windows:
        if bucket_factor > 1:
            yield from bucketed(window, batch_size, rng, layout.collate)
        else:
            for i in range(0, len(window), batch_size):
                yield layout.collate(window[i:i + batch_size])


def ray_batches(shard, batch_size: int, bucket_factor: int = 1, shuffle_buffer: int = 0,
                seed: int = 0, layout: Layout = TEXT) -> Iterator[dict]:
    """Batches from a Ray Data shard (`ray.train.get_dataset_shard`): the shard streams windows of
    bucket_factor * batch_size rows (shuffled through a local buffer when training), each bucketed.
    Bucketed batches always come in a seeded random order, so a capped evaluation is not biased to short
    sentences."""
    rng = np.random.default_rng(seed)
    windows = ([layout.decode(v) for v in b[layout.column]] for b in shard.iter_batches(
        batch_size=batch_size * bucket_factor, batch_format="numpy", prefetch_batches=2,
        local_shuffle_buffer_size=shuffle_buffer or None, local_shuffle_seed=seed))
    return windows_to_batches(windows, batch_size, bucket_factor, rng, layout)


def read_split(data_dir: str | Path, split: str, limit: int | None = None) -> list[np.ndarray]:
    """A whole split in memory as token-id or (T, D) frame arrays (evaluation, sampling, plain-PyTorch loops)."""
    layout = layout_of(read_manifest(data_dir))
    sequences: list[np.ndarray] = []
    filesystem, paths = split_files(data_dir, split)
    for path in paths:
        try:
            table = pq.read_table(path, columns=[layout.column], filesystem=filesystem)
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{data_dir}: cannot read the shard {path} ({str(exc).strip().splitlines()[0]})") from None
        for value in table.column(layout.column).to_numpy(zero_copy_only=False):
            sequences.append(layout.decode(value))
            if limit is not None and len(sequences) >= limit:
                return sequences
    return sequences


def local_batches(sequences: list[np.ndarray], batch_size: int, bucket_factor: int = 1,
                  seed: int | None = None) -> Iterator[dict]:
    """Batches from sequences in memory, shuffled when a seed is given: the same batching as ray_batches.
    Float (T, D) arrays are frames; integer arrays are token ids."""
    layout = TEXT
    if sequences and np.issubdtype(sequences[0].dtype, np.floating):
        layout = Layout("frames", sequences[0].shape[1])
    rng = np.random.default_rng(seed) if seed is not None else None
    order = rng.permutation(len(sequences)) if rng is not None else np.arange(len(sequences))
    window = batch_size * bucket_factor
    windows = ([sequences[i] for i in order[s:s + window]] for s in range(0, len(order), window))
    return windows_to_batches(windows, batch_size, bucket_factor, rng, layout)


def ray_dataset(data_dir: str, split: str, shuffle_files: bool = False):
    """A split as a Ray Data dataset, read lazily from the dataset's filesystem (local, S3, GCS...): the read
    tasks run on the worker nodes, each streaming its shards; with `shuffle_files`, in a new random order at
    every execution (epoch)."""
    import ray.data
    column = layout_of(read_manifest(data_dir)).column
    filesystem, paths = split_files(data_dir, split)
    return ray.data.read_parquet(paths, columns=[column], filesystem=filesystem,
                                 shuffle="files" if shuffle_files else None)
