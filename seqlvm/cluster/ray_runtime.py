"""Starting or joining Ray. Locally Ray gets more logical CPUs than the machine has cores: Train workers each
reserve a CPU, and Ray Data's read tasks need CPUs of their own or streaming waits forever.
The dashboard (on 127.0.0.1) is on by default: Train's placement-group cleaner queries the State API
through it, and without it groups leak and Tune trials wait forever for workers."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading

from pipelines.errors import SeqlvmError, root_cause
from seqlvm.cluster.ceiling import ClusterCeiling, WorkerGroup, describe

GCS_PROBE_TIMEOUT_S = 5
# Ray Data's per-operator progress bars would drown the training progress lines the rank-0 worker prints.
QUIET_ENV = {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def ensure_ray(worker_cpus: float = 1, address: str | None = None, dashboard: bool = True, cpus: int | None = None,
               logging_level: int = logging.INFO):
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local Ray: with `cpus` CPUs when given, else with
    room for `worker_cpus` of workers beside their data tasks. Below `logging_level`, Ray's and Ray Data's lines
    go to the session's log files only."""
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray
    logging.getLogger("ray").setLevel(logging_level)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=True, logging_level=logging_level)
        except ConnectionError as exc:
            raise SeqlvmError(f"cannot join the Ray cluster at {address} ({root_cause(exc)})") from None
    else:
        cpus = cpus or max(os.cpu_count() or 1, math.ceil(worker_cpus)) + 2
        ray.init(num_cpus=cpus, include_dashboard=dashboard, log_to_driver=True,
                 object_store_memory=512 * 1024 * 1024, logging_level=logging_level)
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console's, not the session's log file
            handler.setLevel(max(handler.level, logging_level))
    return ray


def check_address(address: str) -> None:
    """One line for a cluster address that cannot be joined, before anything is written: a Jobs API URL, or a GCS
    where nothing answers (Ray itself retries the connection for minutes)."""
    if address.startswith(("http://", "https://")):
        raise SeqlvmError(f"{address} is a Jobs API address: run the command on that cluster with `seqlvm submit "
                          "-- seqlvm ...`, or join it directly with --address HOST:GCS_PORT")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=GCS_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise SeqlvmError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); check --address or "
                          "RAY_ADDRESS") from None


def join_cluster(group: WorkerGroup, address: str | None) -> None:
    """Start or join Ray for a run, and refuse, before anything is written, one the cluster could never hold, even
    at its autoscaler's maximum size. Below that, Train waits for nodes, and `capacity_watch` says what it waits
    for."""
    ensure_ray(group.workers * group.per_worker["CPU"], address)
    ceiling = ClusterCeiling.reported()
    refusal = ceiling.refusal(group) if ceiling else None
    if refusal:
        raise SeqlvmError(refusal)


def capacity_notice(group: WorkerGroup) -> str | None:
    """On a cluster joined by address: what a run's workers need that its live nodes do not have now, in one line,
    or None. Not an error: an autoscaler may add nodes, and Train waits for them."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not group.fits_one_of(nodes):
        return (f"waiting for a node with {describe(group.per_worker)} for each worker: none of the cluster's "
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
