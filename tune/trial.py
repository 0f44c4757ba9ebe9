"""One trial of a sweep: a training run of the sweep's run spec with the sampled values, logged as a child of
the sweep's MLflow run."""
from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.dataset import PreparedDataset
from seqlvm.training import RunSpec, TrainRequest, build_trainer, open_run


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
    _, _, task = open_run(context.request, context.dataset, spec, context.tracking_uri, context.experiment_id,
                          run_name, tags)
    trainer = build_trainer(context.request, context.dataset, task, trial_id, context.train_storage,
                            callbacks=[TuneReportCallback()])
    # The driver closes the MLflow run from Tune's verdict: a trial stopped by the scheduler ends inside fit()
    # with an exception that is not a failure.
    result = trainer.fit()
    if result.metrics.get("stop_reason"):  # repeated NaN/inf losses: the trial is an error, with its reason
        raise FloatingPointError(result.metrics["stop_reason"])

