"""Writing a prepared dataset: Parquet shards per split, a manifest, atomic replacement of the output folder.

A dataset's location is a local path or any URI `pyarrow.fs.FileSystem.from_uri` accepts (`file:///abs`,
`s3://bucket/prefix`, `gs://bucket/prefix`, `hdfs://...`): `resolve` turns it into (filesystem, path), and every
read and write of a dataset goes through it. A remote dataset is written into a staging prefix beside it (so the
tasks of a cluster can write into it from any node), then moved into place with `manifest.json` last: its presence
marks a complete dataset."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import SeqlvmError

MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")


def split_of(key: str, valid_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """A deterministic split from a hash of the example itself: stable under reordering and growth of the
    corpus, and duplicates always land in the same split (no train/test leakage)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


@dataclass
class SplitSummary:
    """What one split holds, summed over the items that wrote to it. `steps` are tokens for text (without each
    sentence's </s>) and time steps for frames; `max_steps` is the longest sequence (token budgets check it)."""
    sequences: int = 0
    steps: int = 0
    unknown_steps: int = 0
    max_steps: int = 0
    shards: list[str] = field(default_factory=list)

    def add(self, other: "SplitSummary") -> None:
        self.sequences += other.sequences
        self.steps += other.steps
        self.unknown_steps += other.unknown_steps
        self.max_steps = max(self.max_steps, other.max_steps)
        self.shards.extend(other.shards)


@dataclass(frozen=True)
class Folder:
    """A folder on a local or remote filesystem that a preparation writes into. Picklable: its tasks write into it
    wherever they run."""
    filesystem: pafs.FileSystem
    path: str

    @classmethod
    def local(cls, path: str | Path) -> "Folder":
        return cls(pafs.LocalFileSystem(), str(Path(path).absolute()))

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.path).type == pafs.FileType.Directory

    def make_dir(self, name: str) -> None:
        if isinstance(self.filesystem, pafs.LocalFileSystem):  # object stores have no folders to make
            self.filesystem.create_dir(self.file(name), recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.filesystem.open_output_stream(self.file(name)) as stream:
            stream.write(data)

    def write_table(self, name: str, table: pa.Table) -> None:
        pq.write_table(table, self.file(name), filesystem=self.filesystem)

    def read_table(self, name: str) -> pa.Table:
        return pq.read_table(self.file(name), filesystem=self.filesystem)

    def missing(self, names: list[str]) -> list[str]:
        infos = self.filesystem.get_file_info([self.file(name) for name in names])
        return [name for name, info in zip(names, infos) if info.type != pafs.FileType.File]


class ShardWriter:
    """Appends rows to `<folder>/<split>/<prefix>-NNNNN.parquet`, starting a new file every `shard_size` rows, and
    sums what it wrote; `length` names the column that holds each row's length."""

    def __init__(self, folder: Folder, split: str, schema: pa.Schema, shard_size: int, prefix: str = "part",
                 length: str = "length"):
        self.folder, self.split = folder, split
        folder.make_dir(split)
        self.schema, self.shard_size, self.prefix, self.length = schema, shard_size, prefix, length
        self.buffer: dict[str, list] = {name: [] for name in schema.names}
        self.summary = SplitSummary()

    @property
    def rows(self) -> int:
        return self.summary.sequences

    @property
    def shards(self) -> list[str]:
        return self.summary.shards

    def add(self, **row) -> None:
        for name, column in self.buffer.items():
            column.append(row[name])
        self.summary.sequences += 1
        self.summary.steps += row[self.length]
        self.summary.max_steps = max(self.summary.max_steps, row[self.length])
        if len(next(iter(self.buffer.values()))) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not next(iter(self.buffer.values())):
            return
        name = f"{self.split}/{self.prefix}-{len(self.shards):05d}.parquet"
        self.folder.write_table(name, pa.table(self.buffer, schema=self.schema))
        self.shards.append(name)
        self.buffer = {name: [] for name in self.schema.names}


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a dataset location: a local path (made absolute) or a URI that
    `pyarrow.fs.FileSystem.from_uri` accepts. S3 reads its endpoint, region and credentials from the usual
    AWS variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID...) or from the URI's query."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    try:
        filesystem, path = pafs.FileSystem.from_uri(str(location))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SeqlvmError(f"{location}: not a local path or a URI pyarrow can open ({_first_line(exc)})") from None
    return filesystem, path.rstrip("/")


def read_dataset_file(data_dir: str | Path, name: str) -> bytes:
    """The bytes of `name` (manifest.json, vocab.json) in the dataset at `data_dir`."""
    filesystem, root = resolve(data_dir)
    with filesystem.open_input_stream(f"{root}/{name}") as stream:
        return stream.read()


def read_manifest(data_dir: str | Path) -> dict:
    try:
        return json.loads(read_dataset_file(data_dir, MANIFEST))
    except FileNotFoundError:
        raise SeqlvmError(f"{data_dir}: not a prepared dataset (no {MANIFEST}); run `seqlvm prepare` first") from None
    except (OSError, pa.ArrowException, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SeqlvmError(f"{data_dir}: unreadable {MANIFEST} ({_first_line(exc)})") from None


def is_up_to_date(out: str | Path, fingerprint: str) -> bool:
    try:
        return read_manifest(out).get("fingerprint") == fingerprint
    except SeqlvmError:
        return False


def absolute_location(location: str | Path) -> str:
    """A location as recorded in checkpoints and runs: local paths made absolute, URIs as given."""
    return str(location) if is_uri(location) else str(Path(location).absolute())


@contextlib.contextmanager
def atomic_output(out: str | Path, overwrite: bool):
    """Yield a fresh staging `Folder`; on success it replaces `out`: by one rename when local, and on any other
    filesystem by moving its files into place with the manifest last (see `_publish`). The staging folder is a
    temporary folder beside `out`, on the same filesystem, so tasks on any node of a cluster can write into it
    when `out` is remote.

    On any failure before that the staging folder is removed and `out` is left exactly as it was.
    """
    filesystem, root = resolve(out)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        if not root.strip("/"):
            raise SeqlvmError(f"{out}: name a folder (bucket/prefix), not the root of the filesystem")
        staging = Folder(filesystem, f"{root}.staging-{uuid.uuid4().hex[:12]}")
        try:
            if not overwrite and _holds_something(filesystem, root):
                raise SeqlvmError(_taken(out, filesystem, root))
            staging.write_bytes(f".{MANIFEST}.tmp", b"")  # fail now, not after preparing: no bucket, no permission
            filesystem.delete_file(staging.file(f".{MANIFEST}.tmp"))
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{out}: cannot write there ({_first_line(exc)})") from None
        try:
            yield staging
            _publish(staging, root, out)
        finally:
            with contextlib.suppress(OSError, pa.ArrowException):
                filesystem.delete_dir(staging.path)
        return
    out = Path(root)
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise SeqlvmError(_taken(out, filesystem, root))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield Folder.local(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _taken(out, filesystem: pafs.FileSystem, root: str) -> str:
    """Why `out` is not replaced without --overwrite, in one line."""
    if filesystem.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File:
        return (f"{out}: holds a dataset prepared from other input or options, or by an earlier seqlvm (whose "
                "fingerprints differ); pass --overwrite to replace it")
    return f"{out}: already exists and holds something else; pass --overwrite to replace it"


def _holds_something(filesystem: pafs.FileSystem, root: str) -> bool:
    if filesystem.get_file_info(root).type == pafs.FileType.File:
        return True
    return bool(filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True)))


def _remove_dataset(filesystem: pafs.FileSystem, root: str) -> None:
    """The manifest first: a reader never meets a manifest whose shards are gone, even if this fails halfway."""
    manifest = f"{root}/{MANIFEST}"
    if filesystem.get_file_info(manifest).type != pafs.FileType.NotFound:
        filesystem.delete_file(manifest)
    if filesystem.get_file_info(root).type == pafs.FileType.Directory:
        filesystem.delete_dir_contents(root, missing_dir_ok=True)


def _publish(staging: Folder, root: str, out: str | Path) -> None:
    """Replace whatever is at `root` (manifest first, so readers find no dataset rather than a half-replaced one)
    by the files in `staging`, then its manifest (one atomic object on S3 and GCS). On failure what was moved is
    removed, manifest first."""
    filesystem = staging.filesystem
    try:
        manifest = filesystem.get_file_info(staging.file(MANIFEST))
        if manifest.type != pafs.FileType.File:
            raise SeqlvmError(f"{out}: the preparation wrote no {MANIFEST}")
        _remove_dataset(filesystem, root)
        for info in filesystem.get_file_info(pafs.FileSelector(staging.path, recursive=True)):
            name = info.path[len(staging.path) + 1:]
            if info.type == pafs.FileType.File and name != MANIFEST:
                filesystem.move(info.path, f"{root}/{name}")
        filesystem.move(staging.file(MANIFEST), f"{root}/{MANIFEST}")
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError, pa.ArrowException):
            _remove_dataset(filesystem, root)
        raise SeqlvmError(f"{out}: upload failed, no dataset left there ({_first_line(exc)})") from None


def check_shards_present(folder: Folder, splits: dict[str, SplitSummary]) -> None:
    """Refuse to publish a dataset whose tasks wrote shards the driver cannot see: on a cluster, a local --out on
    a filesystem the other nodes do not share."""
    missing = folder.missing([shard for split in splits.values() for shard in split.shards])
    if missing:
        raise SeqlvmError(f"{len(missing)} shards the tasks wrote (first: {missing[0]}) are not in the output folder: "
                          "tasks ran on nodes that do not share it; give --out a path every node mounts, or a URI")
