"""The refusal of a run that an autoscaling cluster could not hold even at its maximum size (no Ray: the ceiling
as the autoscaler reports it; tests/test_e2e_train.py reads it from a real GCS)."""
from __future__ import annotations

from seqlvm.cluster.ray_runtime import ClusterCeiling, WorkerGroup


def test_the_autoscalers_maximum_bounds_the_workers_and_each_worker_needs_one_node():
    ceiling = ClusterCeiling(totals={"CPU": 8.0, "GPU": 2.0},
                             nodes=[{"CPU": 4.0}, {"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0}])
    assert ceiling.refusal(WorkerGroup.of(2, 4, use_gpu=False)) is None
    assert ceiling.refusal(WorkerGroup.of(2, 2, use_gpu=True)) is None
    assert ceiling.refusal(WorkerGroup.of(3, 4, use_gpu=False)).startswith("3 workers x 4 CPU need 12 CPU")
    assert ceiling.refusal(WorkerGroup.of(3, 1, use_gpu=True)).endswith("at most 2 GPU; lower --workers")
    no_such_node = ceiling.refusal(WorkerGroup.of(1, 4, use_gpu=True))
    assert "each worker needs 4 CPU, 1 GPU on one node, but no node this cluster's autoscaler" in no_such_node
    assert "(node types: 2 CPU; 2 CPU, 1 GPU; 4 CPU)" in ceiling.refusal(WorkerGroup.of(1, 5, use_gpu=False))
