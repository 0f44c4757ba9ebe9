"""Where a served model comes from: a registered version (`models:/NAME/VERSION`), a registered alias
(`models:/NAME@ALIAS`, followed as it moves), or a checkpoint (a folder, a file, `runs:/...`, other `models:/` forms).

A version is always loaded by its number, never through the alias, so a loaded model and the version it reports
cannot disagree even when the alias moves during the download."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import SeqlvmError
from seqlvm.checkpoint import LoadedModel, load_model

REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class ModelSource:
    uri: str  # as given, with a local path made absolute (replicas may run in another folder)
    tracking_uri: str | None = None

    @classmethod
    def of(cls, uri: str, tracking_uri: str | None = None) -> "ModelSource":
        if "://" in uri or uri.startswith(("models:/", "runs:/")):
            return cls(uri, tracking_uri)
        return cls(str(Path(uri).absolute()), tracking_uri)

    @property
    def _registered(self):
        return REGISTERED.match(self.uri)

    @property
    def registered_name(self) -> str | None:
        match = self._registered
        return match["name"] if match else None

    @property
    def alias(self) -> str | None:
        """The alias this source follows, if it is one."""
        match = self._registered
        return match["alias"] if match else None

    @property
    def name(self) -> str:
        """What the answers call the model: the registered name, or the checkpoint's path or URI."""
        return self.registered_name or self.uri

    def _client(self):
        from seqlvm import tracking
        return tracking.client(self.tracking_uri)

    def current_version(self) -> str | None:
        """The registered version this source means now (None for a checkpoint)."""
        match = self._registered
        if not match:
            return None
        if match["version"]:
            return match["version"]
        from mlflow.exceptions import MlflowException
        try:
            return str(self._client().get_model_version_by_alias(match["name"], match["alias"]).version)
        except MlflowException as exc:
            raise SeqlvmError(f"{self.uri}: no version of {match['name']!r} holds the alias {match['alias']!r} "
                              f"({str(exc).splitlines()[0]})") from None

    def load(self, version: str | None) -> LoadedModel:
        """The model of `version` (a number from `current_version`), or the checkpoint."""
        if version is None:
            return load_model(self.uri, self.tracking_uri)
        return load_model(f"models:/{self.registered_name}/{version}", self.tracking_uri)

    def check(self) -> str | None:
        """Before Ray starts: one line if the URI does not resolve. Returns the version it means now."""
        if not self._registered:
            load_model(self.uri, self.tracking_uri)  # a file that is no seqlvm checkpoint fails here, in one line
            return None
        from mlflow.exceptions import MlflowException

        from seqlvm import tracking
        tracking.check_reachable(self.tracking_uri)
        version = self.current_version()
        try:
            self._client().get_model_version(self.registered_name, version)
        except MlflowException:
            raise SeqlvmError(f"{self.uri}: {self.registered_name!r} has no version {version}") from None
        return version
