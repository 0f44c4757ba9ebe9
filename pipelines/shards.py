"""Writing a prepared dataset: Parquet shards per split, a manifest, atomic replacement of the output folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seqlvm.errors import SeqlvmError

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


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SeqlvmError(f"{data_dir}: not a prepared dataset (no {MANIFEST}); run `seqlvm prepare` first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SeqlvmError(f"{path}: unreadable manifest ({exc})") from None


def is_up_to_date(out: Path, fingerprint: str) -> bool:
    if not (out / MANIFEST).exists():
        return False
    try:
        return read_manifest(out).get("fingerprint") == fingerprint
    except SeqlvmError:
        return False


@contextlib.contextmanager
def atomic_output(out: Path, overwrite: bool):
    """Yield a fresh temporary folder beside `out`; on success it replaces `out` in one rename.

    On any failure the temporary folder is removed and `out` is left exactly as it was.
    """
    out = out.absolute()
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


def write_manifest(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def split_files(data_dir: str | Path, split: str) -> list[str]:
    """Absolute (or URI) paths of a split's shards, as the manifest lists them."""
    manifest = read_manifest(data_dir)
    try:
        shards = manifest["splits"][split]["shards"]
    except KeyError:
        raise SeqlvmError(f"{data_dir}: manifest has no split {split!r}") from None
    if not shards:
        raise SeqlvmError(f"{data_dir}: split {split!r} is empty")
    return [str(Path(data_dir).absolute() / s) for s in shards]
