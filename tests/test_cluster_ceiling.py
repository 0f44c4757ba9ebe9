"""The refusal of a run that an autoscaling cluster could not hold even at its maximum size, and that maximum read
from a cluster launcher config (no Ray; tests/test_e2e_train.py reports it to a real GCS and reads it back)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.errors import SeqlvmError
from seqlvm.cluster.ceiling import AutoscalerMaximum, ClusterCeiling, WorkerGroup


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


LAUNCHER_CONFIG = Path(__file__).parents[1] / "infra/cluster-launcher/aws.yaml"
INSTANCE_RESOURCES = {"cpu": {"CPU": 16}, "gpu": {"CPU": 8, "GPU": 1}}  # m6i.4xlarge, g5.2xlarge


def bootstrapped(tmp_path: Path, **changes) -> str:
    """infra's AWS launcher config as `ray up` writes it to the head: each node type's resources filled in, as
    JSON (which YAML reads)."""
    config = yaml.safe_load(LAUNCHER_CONFIG.read_text())
    for name, resources in INSTANCE_RESOURCES.items():
        config["available_node_types"][name]["resources"] = resources
    config.update(changes)
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps(config))
    return str(path)


class TestAutoscalerMaximum:
    def test_the_launcher_configs_node_types_and_their_most(self, tmp_path):
        maximum = AutoscalerMaximum.from_file(bootstrapped(tmp_path))
        assert [(t.name, t.resources, t.max_count) for t in maximum.node_types] == [
            ("head", {"CPU": 0}, 1), ("cpu", {"CPU": 16}, 8), ("gpu", {"CPU": 8, "GPU": 1}, 2)]
        assert maximum.max_resources == {"CPU": 8 * 16 + 2 * 8, "GPU": 2}

    def test_the_cap_on_worker_nodes_takes_the_richest_nodes_of_each_resource(self, tmp_path):
        maximum = AutoscalerMaximum.from_file(bootstrapped(tmp_path, max_workers=3))
        assert maximum.max_resources == {"CPU": 3 * 16, "GPU": 2}

    def test_ray_reads_the_same_ceiling_from_its_gcs_record(self, tmp_path):
        from ray._private.state import GlobalState

        config = AutoscalerMaximum.from_file(bootstrapped(tmp_path, max_workers=3)).to_cluster_config()
        assert [(g.name, dict(g.resources), g.max_count) for g in config.node_group_configs][1] == (
            "cpu", {"CPU": 16}, 8)
        ray_reads = {key: GlobalState._calculate_max_resource_from_cluster_config(config, key)
                     for key in ("CPU", "GPU")}  # what Ray Train's worker group checks against
        assert ray_reads == {"CPU": 48, "GPU": 2}

    @pytest.mark.parametrize("node_type, words", [
        ({"resources": {}, "max_workers": 2}, "'w' names no CPU count"),
        ({"resources": {"CPU": "many"}, "max_workers": 2}, "'w': a resource or max_workers is not a whole number"),
        ({"resources": {"CPU": 4}, "max_workers": -1}, "'w': a resource or max_workers is not a whole number"),
        ({"resources": {"CPU": 4}}, "'w' has no max_workers"),
        ({"resources": [4]}, "'w' names no CPU count")])
    def test_a_node_type_it_cannot_count_is_refused_in_one_line(self, tmp_path, node_type, words):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"available_node_types": {"w": node_type}}))
        with pytest.raises(SeqlvmError, match=words):
            AutoscalerMaximum.from_file(str(path))
