"""A prepared dataset, opened once from its location (a folder or a URI): its typed manifest, its splits counted
with one set of names, and its vocabulary (text) or frame layout. Everything downstream (training, evaluation,
sweeps, the registry) reads a dataset through this object, never through the manifest's raw dict."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import SeqlvmError
from pipelines.shards import SPLITS, absolute_location, read_manifest, resolve
from pipelines.stream import Layout, layout_for
from pipelines.vocab import Vocab


@dataclass(frozen=True)
class Split:
    """One split: its shard files (relative to the dataset) and what they hold. `steps` are tokens for text (each
    sentence's </s> not counted) and time steps for frames; `max_steps` is the longest sequence's (0 in datasets
    prepared before it was recorded)."""
    shards: tuple[str, ...]
    sequences: int
    steps: int
    unknown_steps: int = 0
    max_steps: int = 0

    @classmethod
    def from_manifest(cls, entry: dict) -> "Split":
        # Text datasets prepared before the count names were shared say sentences/tokens/unknown_tokens.
        return cls(tuple(entry.get("shards", ())), int(entry.get("sequences", entry.get("sentences", 0))),
                   int(entry.get("steps", entry.get("tokens", 0))),
                   int(entry.get("unknown_steps", entry.get("unknown_tokens", 0))), int(entry.get("max_steps", 0)))


@dataclass(frozen=True)
class PreparedDataset:
    location: str  # local paths absolute, URIs as given
    modality: str  # text | audio | strokes | midi
    source: str
    fingerprint: str
    splits: dict[str, Split]
    options: dict = field(default_factory=dict)  # the preparation options
    task: str | None = None  # "words": the word-generation task's extra files and metrics
    frame_dim: int | None = None
    output: str | None = None  # the output distribution frame models use by default
    normalisation: dict | None = None
    render: dict = field(default_factory=dict)
    skipped: tuple = ()
    manifest: dict = field(default_factory=dict, repr=False, compare=False)  # as written, for the registry

    @classmethod
    def open(cls, location: str | Path) -> "PreparedDataset":
        manifest = read_manifest(location)
        modality = manifest.get("modality", "text")
        if modality != "text" and "frame_dim" not in manifest:
            raise SeqlvmError(f"{location}: the manifest of a {modality} dataset names no frame_dim")
        return cls(absolute_location(location), modality, manifest.get("source", ""), manifest.get("fingerprint", ""),
                   {s: Split.from_manifest(manifest.get("splits", {}).get(s, {})) for s in SPLITS},
                   manifest.get("options", {}), manifest.get("task"),
                   int(manifest["frame_dim"]) if modality != "text" else None, manifest.get("output"),
                   manifest.get("normalisation"), manifest.get("render", {}), tuple(manifest.get("skipped", ())),
                   manifest)

    @property
    def is_text(self) -> bool:
        return self.modality == "text"

    @property
    def has_words(self) -> bool:
        """Text whose tokens are words, not characters (`prepare text --unit char`)."""
        return self.is_text and not self.vocab.is_characters

    @cached_property
    def vocab(self) -> Vocab:
        if not self.is_text:
            raise SeqlvmError(f"{self.location}: {self.modality} data has frames, not a vocabulary")
        return Vocab.of_dataset(self.location)

    @property
    def input_size(self) -> int:
        """What a model's input layer is built from: the vocabulary's size, or the frame size."""
        return len(self.vocab) if self.is_text else int(self.frame_dim)

    @property
    def layout(self) -> Layout:
        return layout_for(self.frame_dim)

    def split_files(self, split: str) -> tuple[pafs.FileSystem, list[str]]:
        """The filesystem and the paths in it of a split's shards."""
        if split not in self.splits:
            raise SeqlvmError(f"{self.location}: no split {split!r}")
        if not self.splits[split].shards:
            raise SeqlvmError(f"{self.location}: split {split!r} is empty")
        filesystem, root = resolve(self.location)
        return filesystem, [f"{root}/{s}" for s in self.splits[split].shards]

    def _shard_column(self, filesystem: pafs.FileSystem, path: str, column: str) -> pa.ChunkedArray:
        try:
            return pq.read_table(path, columns=[column], filesystem=filesystem).column(0)
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{self.location}: cannot read the shard {path} "
                              f"({str(exc).strip().splitlines()[0]})") from None

    def read(self, split: str, limit: int | None = None) -> list[np.ndarray]:
        """A split in memory as token-id or (T, D) frame arrays (evaluation, sampling, plain-PyTorch loops)."""
        layout, sequences = self.layout, []
        filesystem, paths = self.split_files(split)
        for path in paths:
            for value in self._shard_column(filesystem, path, layout.column).to_numpy(zero_copy_only=False):
                sequences.append(layout.decode(value))
                if limit is not None and len(sequences) >= limit:
                    return sequences
        return sequences

    def padded_lengths(self, split: str) -> list[np.ndarray]:
        """Each shard's rows' lengths in a batch (see `Layout.padded`), from their length column alone."""
        filesystem, paths = self.split_files(split)
        return [self.layout.padded(self._shard_column(filesystem, path, self.layout.length_column).to_numpy())
                for path in paths]

    def longest_padded(self, split: str) -> int:
        """The longest row of a split in a batch: from the manifest's longest sequence, or in datasets prepared
        before it was recorded, for text from the preparation's length limit (no shard is read), otherwise from the
        shards' length columns."""
        if self.splits[split].max_steps:
            return self.splits[split].max_steps + (1 if self.is_text else 0)
        if self.is_text:
            limit = self.options.get("fragment_length") or self.options.get("max_length")
            if limit:
                return int(limit) + 1
        return max(int(lengths.max(initial=0)) for lengths in self.padded_lengths(split))

    def ray_dataset(self, split: str, shuffle_files: bool = False):
        """A split as a Ray Data dataset, read lazily from the dataset's filesystem (local, S3, GCS...): the read
        tasks run on the worker nodes, each streaming its shards; with `shuffle_files`, in a new random order at
        every execution (epoch)."""
        import ray.data
        filesystem, paths = self.split_files(split)
        return ray.data.read_parquet(paths, columns=[self.layout.column], filesystem=filesystem,
                                     shuffle="files" if shuffle_files else None)
