"""Where preparation's work runs: one task per input item (a file, a byte range of a large file, a dataset shard),
in this process or as Ray Data tasks on a cluster. The tasks are the same pure functions either way, so both give
the same dataset; the driver only merges small per-item summaries, so its memory does not grow with the corpus."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from pipelines.errors import SeqlvmError

# Small input files are read in packs of up to this many bytes: one task and one set of shards per pack, so a corpus
# of many small files (IAM-OnDB's 13k line files) does not become as many tiny shards.
PACK_BYTES = 2**20


def packed(items: Sequence, sizes: Sequence[int], pack_bytes: int | None = None) -> list[tuple]:
    """Consecutive items in packs of up to `pack_bytes` (an item larger than that alone). It depends on the sizes
    only, so every run of the same input packs it the same way."""
    limit = pack_bytes or PACK_BYTES
    packs, pack, total = [], [], 0
    for item, size in zip(items, sizes, strict=True):
        if pack and total + size > limit:
            packs.append(tuple(pack))
            pack, total = [], 0
        pack.append(item)
        total += size
    if pack:
        packs.append(tuple(pack))
    return packs


@dataclass(frozen=True)
class Failed:
    """What a task returns instead of raising: a user-facing error travels back as its one line."""
    message: str
    exit_code: int = SeqlvmError.exit_code


def _guarded(fn: Callable, item):
    try:
        return fn(item)
    except SeqlvmError as exc:
        return Failed(str(exc), exc.exit_code)


def _raise_failure(result):
    if isinstance(result, Failed):
        error = SeqlvmError(result.message)
        error.exit_code = result.exit_code
        raise error
    return result


class InProcess:
    """Each item in turn, in this process."""

    def map(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        """(index, fn(item)) for each item, in order; a task's SeqlvmError is raised here."""
        for index, item in enumerate(items):
            yield index, _raise_failure(_guarded(fn, item))


@dataclass
class OnRay:
    """Each item as a Ray Data task, one CPU each, on the Ray this process has joined or that `start` starts (called
    at the first map, so a preparation checks its input before Ray starts). Results arrive as the tasks finish,
    not in item order: callers that need order sort by index."""
    start: Callable[[], object] | None = None

    def map(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        if not items:
            return
        import ray.data

        if self.start is not None:
            self.start()

        def task(row: dict) -> dict:
            return {"index": row["id"], "result": pickle.dumps(_guarded(fn, items[row["id"]]))}

        context = ray.data.DataContext.get_current()
        reserving = context.op_resource_reservation_enabled
        # Ray Data holds back part of the CPUs for operators downstream; a pipeline of one operator would leave them
        # idle (measured: 2 CPUs ran these tasks one after another at first, 1.5x slower than plain Ray tasks).
        context.op_resource_reservation_enabled = False
        try:
            rows = ray.data.range(len(items), override_num_blocks=len(items))
            for batch in rows.map(task, num_cpus=1).iter_batches(batch_size=None, prefetch_batches=0):
                for index, result in zip(batch["index"], batch["result"]):
                    yield int(index), _raise_failure(pickle.loads(result))
        finally:
            context.op_resource_reservation_enabled = reserving
