"""Peak memory while a benchmark runs: of the driver, of each Ray worker process below it, and of the object store."""
from __future__ import annotations

import threading

import ray  # noqa: I001  (first: it puts its bundled psutil on sys.path)
import psutil


class Sampler(threading.Thread):
    """Peaks of the driver's RSS, of each Ray worker process's RSS and of their sum, and of the object store."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.stop_event = interval, threading.Event()
        self.driver = psutil.Process()
        self.peaks = {"driver": 0, "worker": 0, "total": 0, "store": None}
        self.store_state = None
        try:
            from ray._private.internal_api import get_state_from_address
            if ray.is_initialized():  # asking for the runtime context would start Ray
                self.store_state = get_state_from_address(ray.get_runtime_context().gcs_address)
        except Exception:  # a private API: without it the object store column says n/a
            self.store_state = None

    def store_bytes(self) -> int | None:
        if self.store_state is None:
            return None
        try:
            from ray._private.internal_api import get_memory_info_reply
            return int(get_memory_info_reply(self.store_state, timeout_seconds=5).store_stats.object_store_bytes_used)
        except Exception:
            return None

    def sample(self) -> None:
        driver = self.driver.memory_info().rss
        workers = []
        for proc in self.driver.children(recursive=True):  # this Ray instance only: raylet -> workers
            try:
                if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::"):
                    workers.append(proc.memory_info().rss)
            except psutil.Error:
                pass
        peaks = self.peaks
        peaks["driver"] = max(peaks["driver"], driver)
        peaks["worker"] = max([peaks["worker"], *workers])
        peaks["total"] = max(peaks["total"], driver + sum(workers))
        store = self.store_bytes()
        if store is not None:
            peaks["store"] = max(peaks["store"] or 0, store)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        self.sample()
        return self.peaks
