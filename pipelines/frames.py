"""Prepared datasets of continuous or binary frame sequences (audio, pen strokes, piano rolls), shared by the
three modality readers: Parquet shards of flattened (T, D) float32 frames, a manifest, optional standardisation
with the training split's statistics, and one policy for corrupt input files (stop, or skip and report).

A reader yields `Example`s; `write_frame_dataset` assigns splits, writes shards atomically, computes the
statistics on the training split, and rewrites the shards standardised (so a corpus never has to be read twice).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import SeqlvmError
from pipelines.shards import SPLITS, ShardWriter, atomic_output, is_up_to_date, read_manifest, split_of, write_manifest

FORMAT = "seqlvm-frames-1"
FRAME_SCHEMA = pa.schema([("frames", pa.list_(pa.float32())), ("steps", pa.int32())])
ON_ERROR = ("stop", "skip")


@dataclass
class FrameOptions:
    """Options every frame reader has (readers subclass it with their own)."""
    valid_fraction: float = field(default=0.05, metadata={"help": "share of the sources (files, pieces) "
                                                                   "hashed into the validation split"})
    test_fraction: float = field(default=0.05, metadata={"help": "share hashed into the test split"})
    split_seed: int = field(default=0, metadata={"help": "seed of the split hash"})
    shard_size: int = field(default=1000, metadata={"help": "sequences per Parquet shard"})
    on_error: str = field(default="stop", metadata={
        "help": "an unreadable file: stop (one-line error, nothing written) or skip (listed in the manifest)"})

    def validate(self) -> None:
        if self.on_error not in ON_ERROR:
            raise SeqlvmError(f"--on-error must be stop or skip, not {self.on_error!r}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise SeqlvmError("--valid-fraction and --test-fraction must be in [0, 1) and sum below 1")
        if self.shard_size < 1:
            raise SeqlvmError("--shard-size must be at least 1")


class Example(NamedTuple):
    key: str  # what the split is hashed from: the source file, so all segments of a file share a split
    frames: np.ndarray  # (T, D)
    split: str | None = None  # a split fixed by the source format (npz, pickle); None = hash the key


@dataclass
class Standardise:
    """Which frame dimensions to standardise with training-split statistics: `scalar` shares one mean and
    standard deviation over all the listed dimensions (raw audio samples), otherwise one per dimension."""
    dims: list[int]
    scalar: bool = False


@dataclass
class ErrorPolicy:
    """What to do with an input file that cannot be read: raise a one-line error, or skip and report it."""
    on_error: str = "stop"
    skipped: list[dict] = field(default_factory=list)
    console: object = None

    def failed(self, path, reason: str) -> None:
        if self.on_error == "stop":
            raise SeqlvmError(f"{path}: {reason} (pass --on-error skip to skip unreadable files)")
        self.skipped.append({"file": str(path), "reason": reason})
        if self.console is not None:
            self.console.print(f"[yellow]skipped[/] {path}: {reason}")


def cache_root() -> Path:
    """Where readers keep what is slow to make (synthesised speech, converted music21 corpora)."""
    return Path(os.environ.get("SEQLVM_CACHE") or Path.home() / ".cache" / "seqlvm")


def files_fingerprint(files: Iterable[Path], options, extra: str = "") -> str:
    """A digest of the input files' paths (relative to their common folder: they decide the splits) and bytes,
    the options and anything else that shapes the output."""
    files = [Path(p).absolute() for p in files]
    root = Path(os.path.commonpath(files)) if len(files) > 1 else (files[0].parent if files else Path())
    h = hashlib.sha256(repr(sorted(asdict(options).items())).encode() + extra.encode())
    for path in files:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def frame_split(example: Example, options: FrameOptions) -> str:
    if example.split is not None:
        return example.split
    return split_of(example.key, options.valid_fraction, options.test_fraction, options.split_seed)


class _Moments:
    """Running sums for the mean and standard deviation of some columns, in float64."""

    def __init__(self, width: int):
        self.count, self.total, self.squares = 0, np.zeros(width), np.zeros(width)

    def add(self, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        self.count += len(values)
        self.total += values.sum(0)
        self.squares += (values ** 2).sum(0)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / max(self.count, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean ** 2, 0.0))
        return mean, np.where(std > 1e-8, std, 1.0)


def _columns(frames: np.ndarray, standardise: Standardise) -> np.ndarray:
    picked = frames[:, standardise.dims]
    return picked.reshape(-1, 1) if standardise.scalar else picked


def _rewrite_standardised(root: Path, shards: list[str], frame_dim: int, standardise: Standardise,
                          mean: np.ndarray, std: np.ndarray) -> None:
    for shard in shards:
        table = pq.read_table(root / shard)
        rows = []
        for flat in table.column("frames").to_numpy(zero_copy_only=False):
            frames = np.asarray(flat, dtype=np.float32).reshape(-1, frame_dim).copy()
            frames[:, standardise.dims] = (frames[:, standardise.dims] - mean) / std
            rows.append(frames.reshape(-1))
        pq.write_table(pa.table({"frames": rows, "steps": table.column("steps")}, schema=FRAME_SCHEMA),
                       root / shard)


def write_frame_dataset(out: str | Path, examples: Callable[[ErrorPolicy], Iterable[Example]], *,
                        modality: str, frame_dim: int, source: str, fingerprint: str, options: FrameOptions,
                        output: str, render: dict, standardise: Standardise | None = None,
                        extra: dict | None = None, overwrite: bool = False, console=None) -> dict:
    """Write `examples(policy)` into `out` (atomically). Returns the manifest; a no-op when `out` already holds
    this exact input. `output` is the output distribution the models use by default for this data; `render`
    holds what `seqlvm sample` needs to turn frames back into sound, ink or notes; `extra` is added to the
    manifest once the examples are read (a reader may fill it in while they are)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    options.validate()
    if is_up_to_date(out, fingerprint):
        if console:
            console.print(f"{out}: already prepared from this input with these options; nothing to do")
        return read_manifest(out)
    started = time.time()
    policy = ErrorPolicy(options.on_error, console=console)
    moments = _Moments(1 if standardise is None or standardise.scalar else len(standardise.dims))
    steps = {s: 0 for s in SPLITS}
    with atomic_output(out, overwrite) as tmp, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} sequences"),
            TimeElapsedColumn(), console=console, disable=console is None, transient=True) as bar:
        task = bar.add_task(f"reading {modality}", total=None)
        writers = {s: ShardWriter(tmp, s, FRAME_SCHEMA, options.shard_size) for s in SPLITS}
        for example in examples(policy):
            frames = np.asarray(example.frames, dtype=np.float32)
            if frames.ndim != 2 or frames.shape[1] != frame_dim or len(frames) == 0:
                policy.failed(example.key, f"a sequence of shape {frames.shape}, expected (steps, {frame_dim})")
                continue
            if not np.isfinite(frames).all():
                policy.failed(example.key, "non-finite values")
                continue
            split = frame_split(example, options)
            writers[split].add(frames=frames.reshape(-1), steps=len(frames))
            steps[split] += len(frames)
            if split == "train" and standardise is not None:
                moments.add(_columns(frames, standardise))
            bar.advance(task)
        for writer in writers.values():
            writer.flush()
        if writers["train"].rows == 0:
            raise SeqlvmError(f"{source}: no usable {modality} sequences for the training split"
                              + (f" ({len(policy.skipped)} files skipped)" if policy.skipped else ""))
        normalisation = None
        if standardise is not None:
            mean, std = moments.mean_std()
            if standardise.scalar:
                mean, std = np.full(len(standardise.dims), mean[0]), np.full(len(standardise.dims), std[0])
            bar.update(task, description="standardising")
            for writer in writers.values():
                _rewrite_standardised(tmp, writer.shards, frame_dim, standardise, mean, std)
            normalisation = {"dims": list(standardise.dims), "scalar": standardise.scalar,
                             "mean": mean.tolist(), "std": std.tolist()}
        manifest = {
            "format": FORMAT, "modality": modality, "source": source, "fingerprint": fingerprint,
            "options": asdict(options), "frame_dim": frame_dim, "output": output, "render": render,
            "normalisation": normalisation, "skipped": policy.skipped,
            "splits": {s: {"sequences": w.rows, "steps": steps[s], "shards": w.shards} for s, w in writers.items()},
            "seconds": round(time.time() - started, 1), **(extra or {}),
        }
        write_manifest(tmp, manifest)
    return manifest


def denormalise(frames: np.ndarray, data_info: dict) -> np.ndarray:
    """Undo the standardisation a checkpoint's `data_info` records: frames in the units of the source (samples,
    pen offsets)."""
    frames = np.array(frames, dtype=np.float32, copy=True)
    norm = data_info.get("normalisation")
    if norm:
        dims = norm["dims"]
        frames[..., dims] = frames[..., dims] * np.asarray(norm["std"]) + np.asarray(norm["mean"])
    return frames
