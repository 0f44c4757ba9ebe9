"""Starting or joining Ray. Locally Ray gets more logical CPUs than the machine has cores: Train workers each
reserve a CPU, and Ray Data's read tasks need CPUs of their own or streaming waits forever.
The dashboard (on 127.0.0.1) is on by default: Train's placement-group cleaner queries the State API
through it, and without it groups leak and Tune trials wait forever for workers."""
from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass

from pipelines.errors import SeqlvmError

# Ray Data's per-operator progress bars would drown the training progress lines the rank-0 worker prints.
QUIET_ENV = {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def ensure_ray(worker_cpus: float = 1, address: str | None = None, dashboard: bool = True):
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        raise SeqlvmError(f"{address} is a Jobs API address: run the command on that cluster with `seqlvm submit "
                          "-- seqlvm ...`, or join it directly with --address HOST:GCS_PORT")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        cpus = max(os.cpu_count() or 1, math.ceil(worker_cpus)) + 2
        ray.init(num_cpus=cpus, include_dashboard=dashboard, log_to_driver=True,
                 object_store_memory=512 * 1024 * 1024)
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


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


def _resources(amounts: dict[str, float]) -> str:
    return ", ".join(f"{amounts[k]:g} {k}" for k in ("CPU", "GPU") if amounts.get(k)) or "no CPU"


@dataclass
class ClusterCeiling:
    """The most an autoscaling cluster can grow to, as its autoscaler reports it to the GCS (the figures Ray Train
    and Ray Data read): each resource's total, and the nodes it can have (its node types, and the live nodes)."""
    totals: dict[str, float]
    nodes: list[dict[str, float]]

    @classmethod
    def reported(cls) -> ClusterCeiling | None:
        """None when no autoscaler reported one: a fixed cluster, or nodes added by hand, may still grow."""
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
            return (f"each worker needs {_resources(group.per_worker)} on one node, but no node this cluster's "
                    f"autoscaler can start has that (node types: "
                    f"{'; '.join(sorted({_resources(n) for n in self.nodes}))}); lower --cpus-per-worker")
        missing = group.beyond(self.totals)
        if missing:
            key, needed, ceiling = missing
            return (f"{group.workers} workers x {group.per_worker[key]:g} {key} need {needed:g} {key}, but this "
                    f"cluster's autoscaler grows it to at most {ceiling:g} {key}; lower --workers"
                    f"{' or --cpus-per-worker' if key == 'CPU' else ''}")
        return None


def join_cluster(group: WorkerGroup, address: str | None):
    """Start or join Ray for a run, and refuse, before anything is written, one the cluster could never hold, even
    at its autoscaler's maximum size. Below that, Train waits for nodes, and `capacity_watch` says what it waits
    for."""
    ray = ensure_ray(group.workers * group.per_worker["CPU"], address)
    ceiling = ClusterCeiling.reported()
    refusal = ceiling.refusal(group) if ceiling else None
    if refusal:
        raise SeqlvmError(refusal)
    return ray


def capacity_notice(group: WorkerGroup) -> str | None:
    """On a cluster joined by address: what a run's workers need that its live nodes do not have now, in one line,
    or None. Not an error: an autoscaler may add nodes, and Train waits for them."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not group.fits_one_of(nodes):
        return (f"waiting for a node with {_resources(group.per_worker)} for each worker: none of the cluster's "
                f"{len(nodes)} live nodes has that (an autoscaler may add one; Ctrl-C to stop)")
    totals = {key: sum(node.get(key, 0.0) for node in nodes) for key in group.per_worker}
    missing = group.beyond(totals)
    if missing:
        key, needed, held = missing
        return (f"waiting for {needed:g} {key} for {group.workers} workers: the cluster has {held:g} "
                "(an autoscaler may add nodes; Ctrl-C to stop)")
    return None


@contextlib.contextmanager
def capacity_watch(group: WorkerGroup, say, every_s: float = 15.0):
    """While the body runs (a Train fit, a sweep): every `every_s` seconds, as long as the cluster's live nodes
    lack what the workers need, say what is missing; quiet once they have it."""
    done = threading.Event()

    def watch():
        while not done.is_set():
            notice = capacity_notice(group)
            if notice is None:
                return
            say(notice)
            done.wait(every_s)

    thread = threading.Thread(target=watch, name="capacity-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
