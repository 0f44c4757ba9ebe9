"""A scoring job's output: one Parquet file, a row a sequence in row order, with what produced it (model, data,
split, samples, seed) as JSON in the file's key-value metadata under `seqlvm`. It is written to a staging file
beside OUT (same filesystem: a local folder or a bucket) and moved onto OUT only once every row is in, so a failed
or interrupted job leaves OUT as it was."""
from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import SeqlvmError
from pipelines.shards import is_uri, resolve
from seqlvm.scoring.job import Placement, ScoreJob, scored
from seqlvm.scoring.rows import ROW
from seqlvm.scoring.scorer import scores_schema

FORMAT = "seqlvm-scores/1"
METADATA_KEY = b"seqlvm"
ROW_GROUP_ROWS = 10_000


def check_out(out: str, overwrite: bool, data_location: str) -> None:
    """Refuse, before anything runs, an OUT that exists (without `overwrite`), that is a folder, or that lies
    inside the data being scored."""
    filesystem, path = resolve(out)
    if not is_uri(out) and not is_uri(data_location):
        data = Path(data_location).absolute()
        if Path(path) == data or data in Path(path).parents:
            raise SeqlvmError(f"--out {out}: inside the data being scored ({data_location}); choose another path")
    try:
        info = filesystem.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:
        raise SeqlvmError(f"--out {out}: cannot look there ({str(exc).strip().splitlines()[0]})") from None
    if info.type == pafs.FileType.Directory:
        raise SeqlvmError(f"--out {out}: a folder; scores are written to one Parquet file (e.g. {out}/scores.parquet)")
    if info.type == pafs.FileType.File and not overwrite:
        raise SeqlvmError(f"--out {out}: already exists; pass --overwrite to replace it")


def read_description(path: str) -> dict:
    """What produced a scores file: its `seqlvm` metadata."""
    filesystem, where = resolve(path)
    return json.loads(pq.read_schema(where, filesystem=filesystem).metadata[METADATA_KEY])


class OrderedWriter:
    """Appends scored tables to a Parquet writer in row groups of ROW_GROUP_ROWS, checking that the rows arrive in
    order, each once."""

    def __init__(self, writer: pq.ParquetWriter):
        self.writer = writer
        self.buffer: list[pa.Table] = []
        self.buffered = self.rows = 0

    def add(self, table: pa.Table) -> None:
        expected = self.rows + self.buffered
        if table[ROW].to_pylist() != list(range(expected, expected + table.num_rows)):
            raise RuntimeError(f"scores arrived out of order: row {table[ROW][0]} where row {expected} was next")
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.concat_tables(self.buffer).cast(self.writer.schema),
                                    row_group_size=ROW_GROUP_ROWS)
        self.rows += self.buffered
        self.buffer, self.buffered = [], 0


def write_scores(job: ScoreJob, out: str, where: Placement, overwrite: bool = False, console=None,
                 model: str = "") -> dict:
    """Score the job into the Parquet file `out` (replaced only once complete). Returns its description."""
    check_out(out, overwrite, job.dataset.location)
    description = {"format": FORMAT, "model": model or job.loaded.payload.get("path", ""),
                   "checkpoint": job.loaded.payload.get("path", ""), "model_name": job.loaded.model.name,
                   "data": job.dataset.location, "fingerprint": job.dataset.fingerprint, "split": job.split,
                   "samples": job.samples, "seed": job.seed, "limit": job.limit, "rows": job.rows}
    schema = scores_schema(job.loaded.model).with_metadata({METADATA_KEY: json.dumps(description)})
    filesystem, path = resolve(out)
    staging = f"{path.rpartition('/')[0]}/.{path.rpartition('/')[2]}.tmp-{uuid.uuid4().hex[:12]}"
    try:  # opened before the scoring starts: a path that cannot be written is refused before Ray starts
        if isinstance(filesystem, pafs.LocalFileSystem):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = filesystem.open_output_stream(staging)
    except (OSError, pa.ArrowException) as exc:
        raise SeqlvmError(f"--out {out}: cannot write there ({str(exc).strip().splitlines()[0]})") from None
    try:
        with stream, pq.ParquetWriter(stream, schema) as writer:
            rows = OrderedWriter(writer)
            for table in scored(job, where, console):
                rows.add(table)
            rows.flush()
            if rows.rows != job.rows:
                raise RuntimeError(f"{rows.rows} rows scored of the {job.rows} asked for")
        filesystem.move(staging, path)
    finally:
        with contextlib.suppress(OSError, pa.ArrowException):
            if filesystem.get_file_info(staging).type == pafs.FileType.File:
                filesystem.delete_file(staging)
    return description
