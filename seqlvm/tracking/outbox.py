"""A training worker's metrics on their way to MLflow, kept in its checkpoints until they are delivered."""
from __future__ import annotations

import time

from seqlvm.tracking.runs import client

# MLflow's REST client retries a failed request with exponential backoff for minutes; the outbox retries at the
# next checkpoint instead, so a worker never stalls on a server that is down.
WORKER_HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch call


class MetricOutbox:
    """A training worker's metrics on their way to MLflow. Each keeps the timestamp it was measured at, and MLflow
    stores an identical (key, value, timestamp, step) once, so sending again is harmless: what is undelivered is
    saved in each checkpoint, so a tracking server that is down for a while gets the metrics when it is back. Workers that start at step S (`replay_after=S`: 0 for a fresh start, the
    checkpoint's step after a restart) may be running steps a failed attempt had already delivered: those keep
    their first values and are not sent twice. `add` never talks to the server."""

    def __init__(self, tracking_uri: str, run_id: str, pending: list | None = None, replay_after: int | None = None):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pending: list[list] = [list(m) for m in pending or []]
        self.replay_after = replay_after
        self.delivered_before: set[tuple[str, int]] | None = None  # (key, step) after replay_after, found once
        self.last_error: str | None = None

    def add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending.extend([key, float(value), now, int(step)] for key, value in metrics.items())

    def flush(self) -> bool:
        """Send what is pending; True when nothing is left. A failure keeps the rest for the next flush."""
        from mlflow.entities import Metric
        try:
            mlflow_client = client(self.tracking_uri)
            if self.replay_after is not None and self.delivered_before is None:
                self.delivered_before = self._logged_after(mlflow_client, self.replay_after)
            if self.delivered_before:
                self.pending = [m for m in self.pending if (m[0], m[3]) not in self.delivered_before]
            while self.pending:
                chunk = self.pending[:MLFLOW_BATCH_LIMIT]
                mlflow_client.log_batch(self.run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
                del self.pending[:len(chunk)]
        except Exception as exc:  # connection errors come in many types; the metrics wait for the next try
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return False
        self.last_error = None
        return True

    def _logged_after(self, mlflow_client, step: int) -> set[tuple[str, int]]:
        keys = mlflow_client.get_run(self.run_id).data.metrics
        return {(key, m.step) for key in keys for m in mlflow_client.get_metric_history(self.run_id, key)
                if m.step > step}
