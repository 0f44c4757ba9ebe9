"""One trial of a sweep: a training run of the sweep's run spec with the sampled values, logged as a child of
the sweep's MLflow run."""
from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.dataset import PreparedDataset
from seqlvm.training import RunSpec, TrackedRun, TrainRequest, WorkerTask, build_trainer


@dataclass
class TrialContext:
    """What every trial shares: the request and dataset of its training run, the sweep's base run spec (each
    trial varies it with its sampled values), and where the sweep logs."""
    request: TrainRequest
    dataset: PreparedDataset
    spec: RunSpec
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep: str
    train_storage: str


def run_trial(params: dict, context: TrialContext) -> None:
    """One trial: a training run of the sweep's spec with the sampled values, logged as a child of the sweep's
    MLflow run."""
    from ray import tune as ray_tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray_tune.get_context().get_trial_id()
    spec = context.spec.with_values(params, source=f"trial {trial_id}")
    # A stable name per trial: a resumed sweep finds the same MLflow run and Train restores the same run.
    run_name = f"{context.sweep}-{trial_id}"
    tags = {"mlflow.parentRunId": context.parent_run_id, "seqlvm.sweep": context.sweep,
            "seqlvm.trial_id": trial_id, "seqlvm.sampled": json.dumps(params)}
    run = TrackedRun.open(context.tracking_uri, context.experiment_id, run_name, spec, context.dataset,
                          context.request.workers, tags)
    trainer = build_trainer(context.request, context.dataset, WorkerTask.of(spec, context.dataset, run), trial_id,
                            context.train_storage, callbacks=[TuneReportCallback()])
    # The sweep's driver ends every trial's run once Tune is done (tune.summary.end_trial_runs): a trial stopped
    # by the scheduler never returns from fit().
    result = trainer.fit()
    if result.metrics.get("stop_reason"):  # repeated NaN/inf losses: the trial is an error, with its reason
        raise FloatingPointError(result.metrics["stop_reason"])

