"""The model a replica answers with. It is loaded when the replica starts; when its source is an alias, a
background thread reads the alias every few seconds and, when it has moved, loads the new version beside the old
one and swaps them in one assignment. A request holds the `ServedModel` it started with, so requests in flight
finish on the old version and none is dropped."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from pipelines.errors import root_cause
from seqlvm.checkpoint import LoadedModel
from seqlvm.operations import ModelOperations
from seqlvm.serving.source import ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    operations: ModelOperations
    version: str | None  # the registered version, None for a checkpoint
    loaded_at: float


class ModelFollower:
    def __init__(self, source: ModelSource, poll_s: float, operations: Callable[[LoadedModel], ModelOperations]):
        self.source, self.poll_s, self._operations = source, poll_s, operations
        self.current = self._load(source.current_version())
        self.problem: str | None = None  # why the last poll could not follow the alias, until one can
        self._failed: str | None = None  # a version that did not load: not retried until the alias moves again
        self._stop = threading.Event()
        if source.alias:
            threading.Thread(target=self._follow, name="alias-follower", daemon=True).start()

    def _load(self, version: str | None) -> ServedModel:
        return ServedModel(self._operations(self.source.load(version)), version, time.time())

    def poll(self) -> bool:
        """Read the alias once and swap in the version it points at if that is new. Returns whether it swapped. A
        version that fails to load is not retried until the alias moves again; `problem` says why meanwhile."""
        version = self.source.current_version()
        if version == self.current.version:
            self.problem = self._failed = None
            return False
        if version == self._failed:
            return False
        try:
            served = self._load(version)
        except Exception as exc:  # a broken or incompatible version: keep serving the one there is
            self._failed = version
            self.problem = f"version {version} did not load: {root_cause(exc)}"
            log.warning("%s: %s", self.source.uri, self.problem)
            return False
        self.current, self.problem, self._failed = served, None, None
        log.info("now serving %s version %s", self.source.name, version)
        return True

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as exc:  # the registry does not answer: keep serving, say why
                self.problem = f"cannot read the alias: {root_cause(exc)}"
                log.warning("%s: %s", self.source.uri, self.problem)

    def stop(self) -> None:
        self._stop.set()
