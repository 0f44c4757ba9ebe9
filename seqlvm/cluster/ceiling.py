"""What a run asks the cluster for (`WorkerGroup`) and the most an autoscaling cluster can grow to
(`ClusterCeiling`): a run beyond that can never be placed, so it is refused instead of waiting forever.

The ceiling is the cluster config an autoscaler reports to the GCS, the record Ray Train and Ray Data read for
the same purpose. Ray 2.60's own autoscaler does not report it (ray-project/ray#52033), so
`seqlvm cluster report-max` reports it from the autoscaling config that `ray up` writes to the head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import SeqlvmError


@dataclass(frozen=True)
class WorkerGroup:
    """What a run (or each trial of a sweep) asks the cluster for: `workers` Ray Train workers, each reserving
    `per_worker` on one node."""
    workers: int
    per_worker: dict[str, float]

    @classmethod
    def of(cls, workers: int, cpus_per_worker: float, use_gpu: bool) -> WorkerGroup:
        return cls(workers, {"CPU": cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})})

    def fits_one_of(self, nodes: list[dict[str, float]]) -> bool:
        return any(all(node.get(k, 0.0) >= v for k, v in self.per_worker.items()) for node in nodes)

    def beyond(self, totals: dict[str, float]) -> tuple[str, float, float] | None:
        """The first resource the workers need more of than `totals` holds: (name, needed, held)."""
        for key, amount in self.per_worker.items():
            if self.workers * amount > totals.get(key, 0.0):
                return key, self.workers * amount, totals.get(key, 0.0)
        return None


def describe(amounts: dict[str, float]) -> str:
    return ", ".join(f"{amounts[k]:g} {k}" for k in ("CPU", "GPU") if amounts.get(k)) or "no CPU"


@dataclass
class ClusterCeiling:
    """The most an autoscaling cluster can grow to: each resource's total, and the nodes it can have (its node
    types, and the live nodes)."""
    totals: dict[str, float]
    nodes: list[dict[str, float]]

    @classmethod
    def reported(cls) -> ClusterCeiling | None:
        """The ceiling reported to the GCS of the Ray this process joined; None when none was: a fixed cluster,
        or one whose nodes are added by hand, may still grow."""
        import ray
        from ray._private.state import state

        try:
            config = state.get_cluster_config()
            totals = state.get_max_resources_from_cluster_config()
        except Exception:  # a private API; without it the run waits, saying what it waits for
            return None
        if config is None or not totals:
            return None
        nodes = [dict(group.resources) for group in config.node_group_configs if group.max_count != 0]
        nodes += [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        return cls({k: float(v) for k, v in totals.items()}, nodes)

    def refusal(self, group: WorkerGroup) -> str | None:
        """Why the group's workers can never be placed on this cluster, or None."""
        if not group.fits_one_of(self.nodes):
            return (f"each worker needs {describe(group.per_worker)} on one node, but no node this cluster's "
                    f"autoscaler can start has that (node types: "
                    f"{'; '.join(sorted({describe(n) for n in self.nodes}))}); lower --cpus-per-worker")
        missing = group.beyond(self.totals)
        if missing:
            key, needed, ceiling = missing
            return (f"{group.workers} workers x {group.per_worker[key]:g} {key} need {needed:g} {key}, but this "
                    f"cluster's autoscaler grows it to at most {ceiling:g} {key}; lower --workers"
                    f"{' or --cpus-per-worker' if key == 'CPU' else ''}")
        return None


@dataclass
class NodeType:
    name: str
    resources: dict[str, int]
    max_count: int


@dataclass
class AutoscalerMaximum:
    """The node types of a Ray cluster launcher config (as `ray up` writes it to the head, each type's resources
    filled in from its instance type), and each resource's most under the config's cap on worker nodes."""
    node_types: list[NodeType]
    max_resources: dict[str, int]

    @classmethod
    def from_file(cls, path: str) -> AutoscalerMaximum:
        import yaml

        try:
            config = yaml.safe_load(Path(path).expanduser().read_text())
        except OSError as exc:
            raise SeqlvmError(f"{path}: cannot read the autoscaling config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise SeqlvmError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        types = config.get("available_node_types") if isinstance(config, dict) else None
        if not isinstance(types, dict) or not types:
            raise SeqlvmError(f"{path}: no available_node_types; give the autoscaling config `ray up` writes to "
                              "the head (~/ray_bootstrap_config.yaml)")
        head, cap = config.get("head_node_type"), config.get("max_workers")
        node_types = []
        for name, spec in types.items():
            spec = spec if isinstance(spec, dict) else {}
            resources = spec.get("resources") or {}
            if not isinstance(resources, dict) or "CPU" not in resources:
                raise SeqlvmError(f"{path}: node type {name!r} names no CPU count in its resources (the config "
                                  "`ray up` writes to the head has them filled in from the instance type)")
            count = 1 if name == head else spec.get("max_workers", cap)
            if count is None:
                raise SeqlvmError(f"{path}: node type {name!r} has no max_workers, and the config none either")
            try:
                node_type = NodeType(name, {k: int(v) for k, v in resources.items()}, int(count))
                cap = None if cap is None else int(cap)
            except (TypeError, ValueError):
                node_type = None
            if node_type is None or min([node_type.max_count, *node_type.resources.values()]) < 0:
                raise SeqlvmError(f"{path}: node type {name!r}: a resource or max_workers is not a whole number "
                                  "of at least 0")
            node_types.append(node_type)
        return cls(node_types, largest_totals(node_types, head, cap))

    def to_cluster_config(self):
        """As the GCS record of an autoscaler's maximum (Ray's `ClusterConfig`)."""
        from ray.core.generated.autoscaler_pb2 import ClusterConfig, NodeGroupConfig

        return ClusterConfig(max_resources=self.max_resources, node_group_configs=[
            NodeGroupConfig(name=t.name, resources=t.resources, max_count=t.max_count) for t in self.node_types])

    def report(self) -> None:
        """Write it to the GCS of the Ray this process joined, where Ray Train, Ray Data and
        `ClusterCeiling.reported` read it."""
        import ray

        ray._private.worker.global_worker.gcs_client.report_cluster_config(
            self.to_cluster_config().SerializeToString())


def largest_totals(node_types: list[NodeType], head: str | None, cap: int | None) -> dict[str, int]:
    """Each resource's most under the cap on worker nodes: the head, plus the workers richest in that resource."""
    workers = [t for t in node_types if t.name != head]
    totals = {}
    for key in sorted({key for t in node_types for key in t.resources}):
        total = sum(t.resources.get(key, 0) for t in node_types if t.name == head)
        left = cap if cap is not None else sum(t.max_count for t in workers)
        for t in sorted(workers, key=lambda t: -t.resources.get(key, 0)):
            count = min(t.max_count, left)
            total, left = total + count * t.resources.get(key, 0), left - count
        totals[key] = total
    return totals
