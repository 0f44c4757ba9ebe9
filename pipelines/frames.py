"""Prepared datasets of continuous or binary frame sequences (audio, pen strokes, piano rolls), shared by the
three modality readers: Parquet shards of flattened (T, D) float32 frames, a manifest, optional standardisation
with the training split's statistics, and one policy for corrupt input files (stop, or skip and report).

A reader is a list of picklable items (files, pieces) and a pure function that reads one item into `Example`s.
`write_frame_dataset` runs one task per item, in this process or on Ray (`pipelines.work`): each task checks,
splits and writes its item's sequences into shards of its own and sums its training statistics; the driver merges
those small summaries in item order, then standardises every shard with the training split's statistics in a
second round of tasks (so a corpus is read once, and the driver never holds it).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.errors import SeqlvmError
from pipelines.manifest import merged_splits, write_manifest
from pipelines.progress import task_progress
from pipelines.shards import (SPLITS, Folder, ShardWriter, SplitSummary, atomic_output, is_up_to_date, read_manifest,
                             split_of)
from pipelines.work import InProcess, packed

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

    def failed(self, path, reason: str) -> None:
        if self.on_error == "stop":
            raise SeqlvmError(f"{path}: {reason} (pass --on-error skip to skip unreadable files)")
        self.skipped.append({"file": str(path), "reason": reason})


def cache_root() -> Path:
    """Where readers keep what is slow to make (synthesised speech, converted music21 corpora)."""
    return Path(os.environ.get("SEQLVM_CACHE") or Path.home() / ".cache" / "seqlvm")


def files_fingerprint(files: Iterable[Path], options, extra: str = "") -> str:
    """A digest of the input files' paths (relative to their common folder: they decide the splits), sizes and
    modification times, the options and anything else that shapes the output. From the files' metadata, not their
    bytes: the driver of a preparation never reads the corpus."""
    files = [Path(p).absolute() for p in files]
    root = Path(os.path.commonpath(files)) if len(files) > 1 else (files[0].parent if files else Path())
    h = hashlib.sha256(repr(sorted(asdict(options).items())).encode() + extra.encode())
    for path in files:
        stat = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return h.hexdigest()


def frame_split(example: Example, options: FrameOptions) -> str:
    if example.split is not None:
        return example.split
    return split_of(example.key, options.valid_fraction, options.test_fraction, options.split_seed)


@dataclass
class Moments:
    """Sums for the mean and standard deviation of some columns, in float64. Each item's task sums its own; the
    driver adds them in item order, so the statistics do not depend on the order the tasks finished in."""
    count: int
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def zeros(cls, width: int) -> "Moments":
        return cls(0, np.zeros(width), np.zeros(width))

    def add_values(self, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        self.count += len(values)
        self.total += values.sum(0)
        self.squares += (values ** 2).sum(0)

    def add(self, other: "Moments") -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / max(self.count, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean ** 2, 0.0))
        return mean, np.where(std > 1e-8, std, 1.0)


@dataclass(frozen=True)
class Normalisation:
    """The standardisation written into the shards and recorded in the manifest (undone by `denormalise`)."""
    dims: list[int]
    scalar: bool
    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, standardise: Standardise, moments: Moments) -> "Normalisation":
        mean, std = moments.mean_std()
        if standardise.scalar:
            mean, std = np.full(len(standardise.dims), mean[0]), np.full(len(standardise.dims), std[0])
        return cls(list(standardise.dims), standardise.scalar, mean.tolist(), std.tolist())

    def apply(self, frames: np.ndarray) -> np.ndarray:
        frames = frames.copy()
        frames[:, self.dims] = (frames[:, self.dims] - np.asarray(self.mean)) / np.asarray(self.std)
        return frames


@dataclass(frozen=True)
class FrameTask:
    """What the task of every item needs besides its item: where to write, how to read an item, and how to check,
    split and sum its sequences. Picklable, so it travels to Ray workers."""
    folder: Folder  # the staging folder of the dataset
    read_item: Callable  # read_item(item, policy, tally) -> Iterator[Example]
    frame_dim: int
    options: FrameOptions
    standardise: Standardise | None

    @property
    def moment_width(self) -> int:
        return 1 if self.standardise is None or self.standardise.scalar else len(self.standardise.dims)


@dataclass
class ItemResult:
    """What one item's task sends back: small whatever the item's size."""
    splits: dict[str, SplitSummary]
    train_moments: Moments
    skipped: list[dict]
    tally: Counter


def _columns(frames: np.ndarray, standardise: Standardise) -> np.ndarray:
    picked = frames[:, standardise.dims]
    return picked.reshape(-1, 1) if standardise.scalar else picked


def _checked_frames(example: Example, frame_dim: int, policy: ErrorPolicy) -> np.ndarray | None:
    """The example's frames as float32, or None once `policy` has been told why they are unusable."""
    frames = np.asarray(example.frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[1] != frame_dim or len(frames) == 0:
        policy.failed(example.key, f"a sequence of shape {frames.shape}, expected (steps, {frame_dim})")
        return None
    if not np.isfinite(frames).all():
        policy.failed(example.key, "non-finite values")
        return None
    return frames


def write_item(task: FrameTask, numbered: tuple[int, tuple]) -> ItemResult:
    """Read the items of pack number `index`, write their sequences into shards of its own
    (`<split>/part-<index>-NNNNN.parquet`, so tasks never write the same file) and return what they hold."""
    index, pack = numbered
    if isinstance(task.folder.filesystem, pafs.LocalFileSystem) and not task.folder.exists():
        # another item stopped the preparation before this task started
        raise SeqlvmError(f"{task.folder.path}: preparation stopped before item {index} was read")
    policy, tally = ErrorPolicy(task.options.on_error), Counter()
    writers = {s: ShardWriter(task.folder, s, FRAME_SCHEMA, task.options.shard_size, prefix=f"part-{index:05d}",
                              length="steps") for s in SPLITS}
    moments = Moments.zeros(task.moment_width)
    for example in (example for item in pack for example in task.read_item(item, policy, tally)):
        frames = _checked_frames(example, task.frame_dim, policy)
        if frames is None:
            continue
        split = frame_split(example, task.options)
        writers[split].add(frames=frames.reshape(-1), steps=len(frames))
        if split == "train" and task.standardise is not None:
            moments.add_values(_columns(frames, task.standardise))
    for writer in writers.values():
        writer.flush()
    return ItemResult({s: w.summary for s, w in writers.items()}, moments, policy.skipped, tally)


@dataclass(frozen=True)
class ShardStandardisation:
    """The task of rewriting one shard standardised."""
    folder: Folder
    frame_dim: int
    normalisation: Normalisation


def standardise_shard(job: ShardStandardisation, shard: str) -> None:
    table = job.folder.read_table(shard)
    rows = [job.normalisation.apply(np.asarray(flat, dtype=np.float32).reshape(-1, job.frame_dim)).reshape(-1)
            for flat in table.column("frames").to_numpy(zero_copy_only=False)]
    job.folder.write_table(shard, pa.table({"frames": rows, "steps": table.column("steps")}, schema=FRAME_SCHEMA))


def _read_items(work, task: FrameTask, packs: list[tuple], bar, progress, console) -> list[ItemResult]:
    """Every pack's result, in pack order whatever order the tasks finished in."""
    results: list[ItemResult | None] = [None] * len(packs)
    for index, result in work.map(partial(write_item, task), list(enumerate(packs))):
        results[index] = result
        if console is not None:
            for entry in result.skipped:
                console.print(f"[yellow]skipped[/] {entry['file']}: {entry['reason']}")
        bar.advance(progress)
    return results


def _standardise_shards(work, folder: Folder, shards: list[str], frame_dim: int, normalisation: Normalisation,
                        bar, progress) -> None:
    bar.reset(progress, total=len(shards), description="standardising")
    for _ in work.map(partial(standardise_shard, ShardStandardisation(folder, frame_dim, normalisation)), shards):
        bar.advance(progress)


def write_frame_dataset(out: str | Path, items: list, read_item: Callable, *, modality: str, frame_dim: int,
                        source: str, fingerprint: str, options: FrameOptions, output: str, render: dict,
                        standardise: Standardise | None = None, details: Callable[[Counter], dict] | None = None,
                        sizes: list[int] | None = None, overwrite: bool = False, console=None,
                        work=InProcess()) -> dict:
    """Write the sequences `read_item(item, policy, tally)` yields for each of `items` into `out` (atomically), one
    `work` task per pack of items (packed by their `sizes` in bytes; without sizes, one item a pack). Returns the
    manifest; a no-op when `out` already holds this exact input. `output` is the output distribution the models
    use by default for this data; `render` holds what `seqlvm sample` needs to turn frames back into sound, ink or
    notes; `details(tally)` gives the modality's own manifest keys from the items' tallies, summed in item
    order."""
    options.validate()
    if is_up_to_date(out, fingerprint):
        if console:
            console.print(f"{out}: already prepared from this input with these options; nothing to do")
        return read_manifest(out)
    started = time.time()
    with atomic_output(out, overwrite) as tmp, task_progress(console) as bar:
        packs = packed(items, sizes) if sizes is not None else [(item,) for item in items]
        progress = bar.add_task(f"reading {modality}", total=len(packs))
        task = FrameTask(tmp, read_item, frame_dim, options, standardise)
        results = _read_items(work, task, packs, bar, progress, console)
        splits = merged_splits([r.splits for r in results])
        skipped = [entry for r in results for entry in r.skipped]
        if splits["train"].sequences == 0:
            raise SeqlvmError(f"{source}: no usable {modality} sequences for the training split"
                              + (f" ({len(skipped)} files skipped)" if skipped else ""))
        normalisation = None
        if standardise is not None:
            moments = Moments.zeros(task.moment_width)
            for result in results:
                moments.add(result.train_moments)
            normalisation = Normalisation.of(standardise, moments)
            _standardise_shards(work, tmp, [s for split in splits.values() for s in split.shards], frame_dim,
                                normalisation, bar, progress)
        tally = Counter()
        for result in results:
            tally.update(result.tally)
        return write_manifest(tmp, format=FORMAT, modality=modality, source=source, fingerprint=fingerprint,
                              options=options, splits=splits, started=started, frame_dim=frame_dim, output=output,
                              render=render, normalisation=asdict(normalisation) if normalisation else None,
                              skipped=skipped, packs=len(packs), **(details(tally) if details else {}))


def denormalise(frames: np.ndarray, data_info: dict) -> np.ndarray:
    """Undo the standardisation a checkpoint's `data_info` records: frames in the units of the source (samples,
    pen offsets)."""
    frames = np.array(frames, dtype=np.float32, copy=True)
    norm = data_info.get("normalisation")
    if norm:
        dims = norm["dims"]
        frames[..., dims] = frames[..., dims] * np.asarray(norm["std"]) + np.asarray(norm["mean"])
    return frames
