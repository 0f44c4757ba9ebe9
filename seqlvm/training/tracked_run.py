"""A training run's MLflow run, from its start to its end. `seqlvm train` and every trial of a sweep open it, and end
it, through this one object: opened (or found again by name) with the run's parameters, and at the end the metrics
the last checkpoint holds undelivered sent (or the run fails loudly), then the learning curves, the tags and the
final status. In between, the workers' `MetricOutbox` tracks it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from seqlvm import tracking
from seqlvm.checkpoint import CHECKPOINT_FILE, read_checkpoint
from seqlvm.tracking.datasets import log_training_dataset
from seqlvm.training.spec import RunSpec

# How long the end of a run waits for a tracking server that is down before failing loudly.
TRACKING_GRACE_SECONDS = float(os.environ.get("SEQLVM_TRACKING_GRACE_SECONDS", "600"))
FAILURE_TAG = "seqlvm.failure"


@dataclass
class TrackedRun:
    tracking_uri: str
    run_id: str
    name: str
    resumed: bool = False

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, name: str, spec: RunSpec, dataset: PreparedDataset,
             workers: int, tags: dict | None = None) -> "TrackedRun":
        """Start the MLflow run of training run `name`, or find it again (a resumed run continues it), with the
        spec and the data as its parameters and the corpus as its training dataset input."""
        run_id, resumed = tracking.start_or_resume_run(tracking_uri, experiment_id, name, {
            "seqlvm.model": spec.model_name, "seqlvm.data_dir": dataset.location,
            "seqlvm.data_source": dataset.source, "seqlvm.data_fingerprint": dataset.fingerprint, **(tags or {})})
        size_param = ({"data.vocab_size": dataset.input_size} if dataset.is_text
                      else {"data.frame_dim": dataset.input_size})
        tracking.log_params(tracking_uri, run_id, {
            **tracking.flatten("", spec.to_dict()), "workers": workers, "data.modality": dataset.modality,
            "data.sequences_train": dataset.splits["train"].sequences, **size_param})
        log_training_dataset(tracking_uri, run_id, dataset)
        return cls(tracking_uri, run_id, name, resumed)

    def deliver_pending(self, checkpoint_dir: str, wait_s: float = TRACKING_GRACE_SECONDS) -> None:
        """Send the metrics the run's last checkpoint holds undelivered (the workers' last delivery may have met a
        server that was down), waiting up to `wait_s` for it; then fail loudly, never drop them silently. Sending
        again what had arrived is harmless (MLflow keeps an identical metric once)."""
        pending = read_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE).get("pending_metrics")
        outbox = tracking.MetricOutbox(self.tracking_uri, self.run_id, pending)
        deadline = time.time() + wait_s
        while not outbox.flush():
            if time.time() > deadline:
                raise SeqlvmError(
                    f"MLflow tracking store {tracking.redact(self.tracking_uri)} unreachable for "
                    f"{wait_s:.0f} s at the end of run {self.name} ({outbox.last_error}); "
                    f"{len(outbox.pending)} metrics are kept in {checkpoint_dir}: once it is back, run the same "
                    "`seqlvm train` again, or `seqlvm tune --resume`, to deliver them")
            time.sleep(5)

    def close(self, failure: str | None = None, tags: dict | None = None) -> None:
        """The run's learning curves, its tags, and its status: FINISHED, or FAILED with `failure` as its reason."""
        client = tracking.client(self.tracking_uri)
        if {"train/nll_bound", "valid/nll_bound"} & set(client.get_run(self.run_id).data.metrics):
            tracking.log_training_figures(self.tracking_uri, self.run_id)
        for key, value in {**(tags or {}), **({FAILURE_TAG: failure[:5000]} if failure else {})}.items():
            client.set_tag(self.run_id, key, value)
        client.set_terminated(self.run_id, status="FAILED" if failure else "FINISHED")

    def fail(self, reason: str, cause: BaseException | None = None, checkpoint_dir: str | None = None):
        """End the run FAILED with its reason (delivering what its last checkpoint holds, if it has one and MLflow
        answers now) and raise the one-line error."""
        try:
            if checkpoint_dir:
                self.deliver_pending(checkpoint_dir, wait_s=0)
            self.close(failure=reason)
        except Exception:  # the reason still reaches the user below
            pass
        raise SeqlvmError(reason) from cause
