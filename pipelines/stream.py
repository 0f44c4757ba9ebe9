"""Batches for training and evaluation: padding (collate), length bucketing, from a Ray Data shard inside Train
workers or from sequences in memory (a split a `PreparedDataset` has read)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID


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

    @property
    def length_column(self) -> str:
        """The int32 column holding each row's length: tokens (text) or time steps (frames)."""
        return "length" if self.frame_dim is None else "steps"

    def padded(self, lengths: np.ndarray) -> np.ndarray:
        """Each row's length in its batch: text gains <s> or </s> (`collate`), frames are as long as they are."""
        return lengths.astype(np.int64) + (1 if self.frame_dim is None else 0)

    def decode(self, value) -> np.ndarray:
        if self.frame_dim is None:
            return np.asarray(value, dtype=np.int64)
        return np.asarray(value, dtype=np.float32).reshape(-1, self.frame_dim)

    def collate(self, sequences: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
        return collate(sequences) if self.frame_dim is None else collate_frames(sequences)


TEXT = Layout()


def layout_for(frame_dim: int | None) -> Layout:
    """The layout of text (no frame size) or of frames of `frame_dim` values."""
    return TEXT if frame_dim is None else Layout("frames", int(frame_dim))


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


def ray_batches(shard, batch_size: int, bucket_factor: int = 1, seed: int = 0, layout: Layout = TEXT) -> Iterator[dict]:
    """Batches from a Ray Data shard (`ray.train.get_dataset_shard`, validation): the shard streams windows of
    bucket_factor * batch_size rows, each bucketed. Bucketed batches always come in a seeded random order, so a
    capped evaluation is not biased to short sentences."""
    rng = np.random.default_rng(seed)
    windows = ([layout.decode(v) for v in b[layout.column]] for b in shard.iter_batches(
        batch_size=batch_size * bucket_factor, batch_format="numpy", prefetch_batches=2))
    return windows_to_batches(windows, batch_size, bucket_factor, rng, layout)


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
