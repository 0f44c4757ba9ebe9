"""A split's rows with their positions in it: `row` 0 is the first sequence of its first shard, in the order
`PreparedDataset.read` returns them. Scores are joined back on it, and each row's draws are seeded from it.

A split is cut into pieces of consecutive rows, each within one shard; a piece is the unit of work a replica
scores at a time."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from pipelines.shards import resolve

ROW = "row"


@dataclass(frozen=True)
class Piece:
    """`rows` rows of the shard at `path` from its row `start`; the first is row `first` of the split."""
    path: str
    first: int
    start: int
    rows: int


def split_pieces(dataset: PreparedDataset, split: str, rows_per_piece: int, limit: int | None = None) -> list[Piece]:
    """The split's first `limit` rows (all without it) in pieces of up to `rows_per_piece`. Only the shards'
    footers are read."""
    filesystem, paths = dataset.split_files(split)
    pieces, first = [], 0
    for path in paths:
        if limit is not None and first >= limit:
            break
        try:
            count = pq.read_metadata(path, filesystem=filesystem).num_rows
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{dataset.location}: cannot read the shard {path} "
                              f"({str(exc).strip().splitlines()[0]})") from None
        if limit is not None:
            count = min(count, limit - first)
        pieces.extend(Piece(path, first + start, start, min(rows_per_piece, count - start))
                      for start in range(0, count, rows_per_piece))
        first += count
    return pieces


def piece_tables(dataset: PreparedDataset, pieces: list[Piece]) -> Iterator[pa.Table]:
    """Each piece's rows, in turn: `row` and the dataset's sequence column (token ids, or flattened frames). A
    shard is read once for its consecutive pieces."""
    filesystem, _ = resolve(dataset.location)
    column = dataset.layout.column
    for path, group in itertools.groupby(pieces, key=lambda piece: piece.path):
        try:
            values = pq.read_table(path, columns=[column], filesystem=filesystem).column(0)
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{dataset.location}: cannot read the shard {path} "
                              f"({str(exc).strip().splitlines()[0]})") from None
        for piece in group:
            rows = pa.array(range(piece.first, piece.first + piece.rows), pa.int64())
            yield pa.table({ROW: rows, column: values.slice(piece.start, piece.rows)})


def read_pieces(batch: pa.Table, dataset: PreparedDataset) -> pa.Table:
    """Ray Data's read step: a batch of pieces (as rows of their fields) to their rows."""
    return pa.concat_tables(piece_tables(dataset, [Piece(**fields) for fields in batch.to_pylist()]))
