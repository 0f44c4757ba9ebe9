"""Writing a prepared dataset: Parquet shards per split, a manifest, atomic replacement of the output folder.

A dataset's location is a local path or any URI `pyarrow.fs.FileSystem.from_uri` accepts (`file:///abs`,
`s3://bucket/prefix`, `gs://bucket/prefix`, `hdfs://...`): `resolve` turns it into (filesystem, path), and every
read and write of a dataset goes through it. A remote dataset is written in a local temporary folder, then
uploaded with `manifest.json` last: its presence marks a complete dataset."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
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


class ShardWriter:
    """Appends rows to `DIR/<split>/part-NNNNN.parquet`, starting a new file every `shard_size` rows."""

    def __init__(self, root: Path, split: str, schema: pa.Schema, shard_size: int):
        self.dir = root / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema, self.shard_size = schema, shard_size
        self.buffer: dict[str, list] = {name: [] for name in schema.names}
        self.shards: list[str] = []
        self.rows = 0

    def add(self, **row) -> None:
        for name, column in self.buffer.items():
            column.append(row[name])
        self.rows += 1
        if len(next(iter(self.buffer.values()))) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not next(iter(self.buffer.values())):
            return
        name = f"part-{len(self.shards):05d}.parquet"
        pq.write_table(pa.table(self.buffer, schema=self.schema), self.dir / name)
        self.shards.append(f"{self.dir.name}/{name}")
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
    """Yield a fresh local temporary folder; on success it replaces `out` in one rename (local) or is uploaded
    to `out` with its manifest last (any other filesystem, see `_upload`).

    On any failure before that the temporary folder is removed and `out` is left exactly as it was.
    """
    filesystem, root = resolve(out)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        if not root.strip("/"):
            raise SeqlvmError(f"{out}: name a folder (bucket/prefix), not the root of the filesystem")
        try:
            if not overwrite and _holds_something(filesystem, root):
                raise SeqlvmError(f"{out}: already exists and holds something else; pass --overwrite to replace it")
            probe = f"{root}/.{MANIFEST}.tmp"  # fail now, not after preparing: a missing bucket, no permission
            with filesystem.open_output_stream(probe):
                pass
            filesystem.delete_file(probe)
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{out}: cannot write there ({_first_line(exc)})") from None
        with tempfile.TemporaryDirectory(prefix="seqlvm-prepare-") as tmp:
            folder = Path(tmp) / "dataset"
            folder.mkdir()
            yield folder
            (folder / MANIFEST).rename(Path(tmp) / MANIFEST)
            _upload(folder, Path(tmp) / MANIFEST, filesystem, root, out)
        return
    out = Path(root)
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise SeqlvmError(f"{out}: already exists and holds something else; "
                              "pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
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


def _upload(folder: Path, manifest: Path, filesystem: pafs.FileSystem, root: str, out: str | Path) -> None:
    """Replace whatever is at `root` (manifest first, so readers find no dataset rather than a half-replaced
    one) by the shards and vocabulary in `folder`, then the manifest, written beside and moved into place (one
    atomic object on S3 and GCS). On failure what was uploaded is removed, manifest first."""
    local = pafs.LocalFileSystem()
    try:
        _remove_dataset(filesystem, root)
        pafs.copy_files(str(folder), root, source_filesystem=local, destination_filesystem=filesystem)
        pafs.copy_files(str(manifest), f"{root}/.{MANIFEST}.tmp", source_filesystem=local,
                        destination_filesystem=filesystem)
        filesystem.move(f"{root}/.{MANIFEST}.tmp", f"{root}/{MANIFEST}")
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError, pa.ArrowException):
            _remove_dataset(filesystem, root)
        raise SeqlvmError(f"{out}: upload failed, no dataset left there ({_first_line(exc)})") from None


def write_manifest(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
