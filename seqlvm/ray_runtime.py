"""Starting or joining Ray. Locally Ray gets more logical CPUs than the machine has cores: Train workers each
reserve a CPU, and Ray Data's read tasks need CPUs of their own or streaming waits forever.
The dashboard (on 127.0.0.1) is on by default: Train's placement-group cleaner queries the State API
through it, and without it groups leak and Tune trials wait forever for workers."""
from __future__ import annotations

import os

QUIET_ENV = {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def ensure_ray(workers: int = 1, address: str | None = None, dashboard: bool = True):
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        cpus = max(os.cpu_count() or 1, workers) + 2
        ray.init(num_cpus=cpus, include_dashboard=dashboard, log_to_driver=True,
                 object_store_memory=512 * 1024 * 1024)
    return ray
