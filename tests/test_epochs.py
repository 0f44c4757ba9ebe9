"""The epoch plan (pipelines/epochs.py), pure and fast: token budgets, coverage of every sequence once per epoch
across workers, exact resumption at any step, seeded orders; and that both ways of reading a plan (in memory,
streamed) give the same batches."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.epoch_reading import ShardsInMemory, epoch_batches
from pipelines.epochs import Batching, EpochPlanner, EpochPosition, check_token_budget
from pipelines.errors import SeqlvmError


def corpus(seed: int = 0, shards: tuple[int, ...] = (300, 170, 45)) -> list[np.ndarray]:
    """Padded lengths of a split of a few shards of uneven sizes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 40, size=n) for n in shards]


def rows_of(planner: EpochPlanner, epoch: int, rank: int, steps_taken: int = 0) -> list[list[tuple[int, int]]]:
    """A worker's batches of an epoch after `steps_taken` steps, as (shard, row) ids."""
    plan = planner.plan(epoch)
    return [[(window.shard, window.start + int(i)) for i in batch]
            for window, skip in plan.remaining(rank, steps_taken, planner.counts)
            for batch in planner.batches(window, epoch)[skip:]]


BATCHINGS = [Batching(8, 1), Batching(8, 4), Batching(8, 4, max_tokens=100), Batching(5, 1, max_tokens=60)]


@pytest.mark.parametrize("batching", BATCHINGS, ids=str)
@pytest.mark.parametrize("world", [1, 2, 3])
def test_an_epoch_covers_every_sequence_once_across_workers(batching, world):
    lengths = corpus()
    planner = EpochPlanner(lengths, batching, world)
    for epoch in range(2):
        seen = [row for rank in range(world) for batch in rows_of(planner, epoch, rank) for row in batch]
        assert sorted(seen) == [(s, r) for s, shard in enumerate(lengths) for r in range(len(shard))]
        plan = planner.plan(epoch)
        assert [len(rows_of(planner, epoch, rank)) for rank in range(world)] == list(plan.batch_counts)
        # a worker reads only its own windows
        owned = [{w.index for w in plan.windows[rank]} for rank in range(world)]
        assert sum(len(o) for o in owned) == len(set().union(*owned)) == len(planner.windows)


@pytest.mark.parametrize("max_tokens", [40, 64, 100, 333])
def test_token_budget_batches_never_exceed_the_budget_and_hold_every_sequence_once(max_tokens):
    lengths = corpus(1)
    planner = EpochPlanner(lengths, Batching(8, 3, max_tokens=max_tokens), 2)
    batches = [b for rank in range(2) for b in rows_of(planner, 0, rank)]
    sizes = [len(b) * max(int(lengths[s][r]) for s, r in b) for b in batches]
    assert max(sizes) <= max_tokens
    assert sorted(row for b in batches for row in b) == sorted((s, r) for s, x in enumerate(lengths)
                                                               for r in range(len(x)))
    # batches are filled: one more sequence of the batch's longest length would not have fitted
    assert np.mean(sizes) > max_tokens / 2
    assert max_tokens < 300 or max(len(b) for b in batches) > 8  # not capped by batch_size


def test_a_sequence_longer_than_the_token_budget_is_refused_in_one_line():
    lengths = [np.array([3, 51, 7])]
    with pytest.raises(SeqlvmError, match=r"^train.max_tokens=50 is smaller than the longest training sequence "
                                          r"\(51 steps padded\); raise it to at least 51$"):
        EpochPlanner(lengths, Batching(4, max_tokens=50), 1)
    check_token_budget(51, 51)
    EpochPlanner(lengths, Batching(4, max_tokens=51), 1)


@pytest.mark.parametrize("batching", BATCHINGS, ids=str)
def test_a_plan_resumed_at_step_k_yields_exactly_each_workers_remaining_batches(batching):
    planner = EpochPlanner(corpus(2), batching, 2)
    for rank in range(2):
        whole = rows_of(planner, 3, rank)
        for k in (0, 1, 7, len(whole) // 2, len(whole) - 1, len(whole), len(whole) + 5):
            assert rows_of(planner, 3, rank, k) == whole[k:]
    # windows finished before step k are not read again: only the windows still holding batches remain
    plan = planner.plan(3)
    left = plan.remaining(0, plan.batch_counts[0] - 1, planner.counts)
    assert len(left) == 1 and left[0][0] == plan.windows[0][-1]


def test_epochs_differ_and_the_same_seed_gives_the_same_plan():
    lengths = corpus(3)
    first, again = EpochPlanner(lengths, Batching(8, 4), 2), EpochPlanner(lengths, Batching(8, 4), 2)
    other_seed = EpochPlanner(lengths, Batching(8, 4, seed=1), 2)
    assert rows_of(first, 0, 0) == rows_of(again, 0, 0) and rows_of(first, 1, 1) == rows_of(again, 1, 1)
    assert rows_of(first, 0, 0) != rows_of(first, 1, 0)
    assert rows_of(first, 0, 0) != rows_of(other_seed, 0, 0)
    # and the batches themselves change, not only the windows' order and owners
    def batches(epoch: int) -> set:
        return {tuple(b) for rank in range(2) for b in rows_of(first, epoch, rank)}
    assert len(batches(0) & batches(1)) < len(batches(0)) / 2


def test_workers_out_of_batches_are_counted_out_of_each_step():
    planner = EpochPlanner([np.full(100, 5)], Batching(10, 1), 3)  # 10 windows of one batch: 4, 3, 3
    plan = planner.plan(0)
    assert sorted(plan.batch_counts) == [3, 3, 4] and plan.steps == 4
    assert [plan.real_workers(step) for step in range(4)] == [3, 3, 3, 1]


def test_a_position_survives_the_same_world_and_restarts_its_epoch_in_another():
    position = EpochPosition(epoch=2, steps=17, world=2)
    assert position.resumed_by(2) == position
    assert position.resumed_by(3) == EpochPosition(2, 0, 3)


def test_batches_in_memory_follow_the_plan_with_bucketing(shakespeare):
    from pipelines.dataset import PreparedDataset

    dataset = PreparedDataset.open(shakespeare)
    lengths = dataset.padded_lengths("train")
    assert dataset.longest_padded("train") == max(int(x.max()) for x in lengths) == 31
    planner = EpochPlanner(lengths, Batching(16, 4, max_tokens=200), 2)
    plan = planner.plan(0)
    source = ShardsInMemory(dataset)
    batches = list(epoch_batches(planner, plan, 1, 5, source, dataset.layout))
    assert len(batches) == plan.batch_counts[1] - 5
    assert [[(b.shard, int(r)) for r in b.rows] for b in batches] == rows_of(planner, 0, 1, 5)
    for batch in batches:
        inputs = batch.tensors["inputs"]
        assert inputs.numel() <= 200
        assert batch.tensors["lengths"].tolist() == [int(lengths[batch.shard][r]) for r in batch.rows]
