"""Reading a worker's share of an epoch plan (pipelines/epochs.py) into batches: the rows of each of its windows,
read with column projection from the dataset's filesystem (local, S3, GCS...), cut as the plan says. A small
training split is read once and kept in memory (`ShardsInMemory`); a large one is streamed through Ray Data one
window per block, in plan order, with a bounded read-ahead (`StreamedWindows`), so the object store holds a few
windows whatever the corpus's size. Both give identical batches."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines.dataset import PreparedDataset
from pipelines.epochs import EpochPlan, EpochPlanner, Window
from pipelines.errors import SeqlvmError
from pipelines.shards import resolve
from pipelines.stream import Layout

# Windows Ray Data may read ahead of the one being trained on (object-store budget, in windows' bytes).
READ_AHEAD_WINDOWS = 2
# Windows per Ray Data execution: an execution holds a small object per read task in the object store until its
# dataset is collected, so an epoch is read in executions of this many windows, and the store's use does not grow
# with the corpus (measured: benchmarks/streaming_memory.py).
EXECUTION_WINDOWS = 64


@dataclass
class PlannedBatch:
    tensors: dict[str, torch.Tensor]
    shard: int  # a batch comes from one window, so from one shard
    rows: np.ndarray  # its sequences' rows in that shard, in batch order


def read_rows(location: str, path: str, column: str, start: int = 0, stop: int | None = None) -> pa.ChunkedArray:
    """Rows [start, stop) (stop None: to the end) of one column of a shard: only the row groups holding them are
    read."""
    filesystem, _ = resolve(location)
    try:
        with filesystem.open_input_file(path) as handle:
            shard = pq.ParquetFile(handle)
            stop = shard.metadata.num_rows if stop is None else stop
            groups, first, offset = [], 0, 0
            for group in range(shard.metadata.num_row_groups):
                rows = shard.metadata.row_group(group).num_rows
                if offset < stop and offset + rows > start:
                    first = first if groups else offset
                    groups.append(group)
                offset += rows
            table = shard.read_row_groups(groups, columns=[column])
    except (OSError, pa.ArrowException) as exc:
        raise SeqlvmError(f"{location}: cannot read the shard {path} ({str(exc).strip().splitlines()[0]})") from None
    return table.column(0).slice(start - first, stop - start)


def decode(layout: Layout, values) -> list[np.ndarray]:
    return [layout.decode(v) for v in values.to_numpy(zero_copy_only=False)]


def read_window(dataset: PreparedDataset, window: Window) -> list[np.ndarray]:
    _, paths = dataset.split_files("train")
    column = dataset.layout.column
    return decode(dataset.layout, read_rows(dataset.location, paths[window.shard], column, window.start, window.stop))


class ShardsInMemory:
    """The whole split decoded once, on first use, and kept across epochs."""

    def __init__(self, dataset: PreparedDataset):
        self.dataset = dataset
        self.shards: list[list[np.ndarray]] | None = None

    def read(self, window: Window) -> list[np.ndarray]:
        if self.shards is None:
            _, paths = self.dataset.split_files("train")
            column = self.dataset.layout.column
            self.shards = [decode(self.dataset.layout, read_rows(self.dataset.location, path, column))
                           for path in paths]
        return self.shards[window.shard][window.start:window.stop]

    def windows(self, windows: list[Window]) -> Iterator[list[np.ndarray]]:
        return (self.read(window) for window in windows)


def _read_windows(batch: pa.Table, windows: np.ndarray, location: str, paths: list[str], column: str) -> pa.Table:
    """Ray Data's map function: the rows of the windows a block numbers (rows of `windows`: index, shard, start,
    stop), tagged with their window."""
    tables = []
    for position in batch.column("id").to_pylist():
        index, shard, start, stop = (int(v) for v in windows[position])
        values = read_rows(location, paths[shard], column, start, stop)
        tables.append(pa.table({"window": pa.array(np.full(stop - start, index, dtype=np.int64)), column: values}))
    return pa.concat_tables(tables)


class StreamedWindows:
    """A worker's windows streamed through Ray Data: one block per window, in plan order (`preserve_order`), read
    ahead by at most READ_AHEAD_WINDOWS windows' bytes of object store, EXECUTION_WINDOWS windows an execution.
    `read` reads one window directly (a filler step's batch)."""

    def __init__(self, dataset: PreparedDataset, window_bytes: int, execution_windows: int = EXECUTION_WINDOWS):
        self.dataset, self.window_bytes, self.execution_windows = dataset, window_bytes, execution_windows

    def read(self, window: Window) -> list[np.ndarray]:
        return read_window(self.dataset, window)

    def windows(self, windows: list[Window]) -> Iterator[list[np.ndarray]]:
        for first in range(0, len(windows), self.execution_windows):
            yield from self._execution(windows[first:first + self.execution_windows])

    def _execution(self, windows: list[Window]) -> Iterator[list[np.ndarray]]:
        import ray.data
        from ray.data import DataContext, ExecutionResources

        options = DataContext.get_current().execution_options  # this worker process's context
        options.preserve_order = True
        options.resource_limits = ExecutionResources.for_limits(
            object_store_memory=READ_AHEAD_WINDOWS * self.window_bytes)
        layout, (_, paths) = self.dataset.layout, self.dataset.split_files("train")
        # `range` makes its blocks in its read tasks, as they run: `from_items` would put one block per window in
        # the object store at once, which grows with the corpus.
        table = np.array([[w.index, w.shard, w.start, w.stop] for w in windows], dtype=np.int64)
        blocks = ray.data.range(len(windows), override_num_blocks=len(windows)).map_batches(
            _read_windows, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"windows": table, "location": self.dataset.location, "paths": paths, "column": layout.column})
        expected, current, pending = iter(windows), None, []
        for block in blocks.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            # Each window's rows are contiguous, but Ray Data may cut or join blocks: group the rows by window.
            tags, values = block.column("window").to_numpy(), block.column(layout.column)
            cuts = [0, *(np.flatnonzero(np.diff(tags)) + 1).tolist(), len(tags)]
            for begin, end in zip(cuts, cuts[1:]):
                if current is None or int(tags[begin]) != current.index:
                    if current is not None:
                        yield _finished(current, pending, layout)
                    current, pending = next(expected), []
                    if current.index != int(tags[begin]):
                        raise RuntimeError(f"Ray Data gave window {tags[begin]} for {current.index}: out of order")
                pending.extend(values.slice(begin, end - begin).chunks)
        if current is not None:
            yield _finished(current, pending, layout)
        # Ray Data's plan objects hold each other in cycles, and with them the execution's objects in the store,
        # until a full collection: without one the store grew by each execution's read tasks.
        del blocks
        gc.collect()


def _finished(window: Window, chunks: list, layout: Layout) -> list[np.ndarray]:
    values = pa.chunked_array(chunks)
    if len(values) != window.stop - window.start:
        raise RuntimeError(f"window {window.index}: {len(values)} rows read of {window.stop - window.start}")
    return decode(layout, values)


def epoch_batches(planner: EpochPlanner, plan: EpochPlan, rank: int, steps_taken: int, source,
                  layout: Layout) -> Iterator[PlannedBatch]:
    """A worker's batches of an epoch after its first `steps_taken`, from `source` (ShardsInMemory or
    StreamedWindows): windows it has finished are skipped without being read."""
    remaining = plan.remaining(rank, steps_taken, planner.counts)
    for (window, skip), sequences in zip(remaining, source.windows([window for window, _ in remaining])):
        for positions in planner.batches(window, plan.epoch)[skip:]:
            yield PlannedBatch(layout.collate(sequences[i] for i in positions), window.shard,
                               window.start + positions)


def filler_batch(planner: EpochPlanner, plan: EpochPlan, rank: int, source, layout: Layout) -> PlannedBatch:
    """A batch for a step of weight 0 (a worker with no batch left this epoch still takes part in the step's
    collectives): the first of its own windows, or of the epoch's if it has none."""
    window = next(iter(plan.windows[rank] or next(mine for mine in plan.windows if mine)))
    positions = planner.batches(window, plan.epoch)[0]
    sequences = source.read(window)
    return PlannedBatch(layout.collate(sequences[i] for i in positions), window.shard, window.start + positions)
