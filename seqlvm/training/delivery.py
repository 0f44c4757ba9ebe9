"""The end of a run's metrics: what its final checkpoint holds undelivered reaches MLflow, or the run fails loudly."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.errors import SeqlvmError
from seqlvm import tracking
from seqlvm.checkpoint import CHECKPOINT_FILE, read_checkpoint

# How long the driver waits at the end of a run for a tracking server that is down before failing loudly.
TRACKING_GRACE_SECONDS = float(os.environ.get("SEQLVM_TRACKING_GRACE_SECONDS", "600"))


def deliver_pending_metrics(checkpoint_dir: str, tracking_uri: str, run_id: str, run_name: str) -> None:
    """Send the metrics the final checkpoint holds undelivered (the workers' last delivery may have met a server
    that was down), waiting up to TRACKING_GRACE_SECONDS for it; then fail loudly, never drop them silently."""
    outbox = tracking.MetricOutbox(tracking_uri, run_id,
                                   read_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE).get("pending_metrics"))
    deadline = time.time() + TRACKING_GRACE_SECONDS
    while not outbox.flush():
        if time.time() > deadline:
            raise SeqlvmError(
                f"MLflow tracking store {tracking.redact(tracking_uri)} unreachable for {TRACKING_GRACE_SECONDS:.0f} s "
                f"at the end of run {run_name} ({outbox.last_error}); {len(outbox.pending)} metrics are kept in "
                f"{checkpoint_dir}: run the same command again once it is back to deliver them")
        time.sleep(5)
