"""Starting or joining Ray. Locally Ray gets more logical CPUs than the machine has cores: Train workers each
reserve a CPU, and Ray Data's read tasks need CPUs of their own or streaming waits forever.
The dashboard (on 127.0.0.1) is on by default: Train's placement-group cleaner queries the State API
through it, and without it groups leak and Tune trials wait forever for workers."""
from __future__ import annotations

import contextlib
import math
import os
import threading

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


def capacity_notice(worker_cpus: float, workers: int) -> str | None:
    """On a cluster joined by address: what a run's workers need that its live nodes do not have now, in one line,
    or None. Not an error: an autoscaler may add nodes, and Train waits for them."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    largest = max((node["Resources"].get("CPU", 0.0) for node in nodes), default=0.0)
    total = sum(node["Resources"].get("CPU", 0.0) for node in nodes)
    if worker_cpus > largest:
        return (f"waiting for a node with {worker_cpus:g} CPUs for each worker: the largest of the cluster's "
                f"{len(nodes)} live nodes has {largest:g} (an autoscaler may add one; Ctrl-C to stop)")
    if workers * worker_cpus > total:
        return (f"waiting for {workers * worker_cpus:g} CPUs for {workers} workers: the cluster has {total:g} "
                "(an autoscaler may add nodes; Ctrl-C to stop)")
    return None


@contextlib.contextmanager
def capacity_watch(worker_cpus: float, workers: int, say, every_s: float = 15.0):
    """While the body runs (a Train fit, a sweep): every `every_s` seconds, as long as the cluster's live nodes
    lack what the workers need, say what is missing; quiet once they have it."""
    done = threading.Event()

    def watch():
        while not done.is_set():
            notice = capacity_notice(worker_cpus, workers)
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
