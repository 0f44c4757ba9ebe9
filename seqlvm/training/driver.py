"""`seqlvm train`: the driver. Opens (or resumes) the MLflow run, fits a Ray Train TorchTrainer over the prepared
shards, then evaluates the final checkpoint on the test split and logs the checkpoint and figures to MLflow."""
from __future__ import annotations

import time
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError, root_cause
from seqlvm import tracking
from seqlvm.checkpoint import load_model, local_copy
from seqlvm.cluster.ceiling import WorkerGroup
from seqlvm.cluster.ray_runtime import capacity_watch, join_cluster
from seqlvm.training.data import training_dataset
from seqlvm.training.delivery import deliver_pending_metrics
from seqlvm.training.evaluate import evaluate_checkpoint
from seqlvm.training.request import TrainRequest, TrainResult, prepare_run
from seqlvm.training.spec import RunSpec
from seqlvm.training.worker import WorkerTask, train_loop_per_worker


def open_run(request: TrainRequest, dataset: PreparedDataset, spec: RunSpec, tracking_uri: str, experiment_id: str,
             run_name: str, tags: dict | None = None) -> tuple[str, bool, WorkerTask]:
    """Start (or find again, by name) the MLflow run, log its parameters and build what the workers get.
    Returns (run id, resumed, the workers' task)."""
    run_id, resumed = tracking.start_or_resume_run(tracking_uri, experiment_id, run_name, {
        "seqlvm.model": spec.model_name, "seqlvm.data_dir": dataset.location, "seqlvm.data_source": dataset.source,
        "seqlvm.data_fingerprint": dataset.fingerprint, **(tags or {})})
    task = WorkerTask(spec, dataset.location, dataset.input_size, dataset.vocab.words if dataset.is_text else None,
                      dataset.data_info(), tracking_uri, run_id)
    size_param = {"data.vocab_size": task.input_size} if dataset.is_text else {"data.frame_dim": task.input_size}
    tracking.log_params(tracking_uri, run_id, {
        **tracking.flatten("", spec.to_dict()), "workers": request.workers, "data.modality": dataset.modality,
        "data.sequences_train": dataset.splits["train"].sequences, **size_param})
    return run_id, resumed, task


def build_trainer(request: TrainRequest, dataset: PreparedDataset, task: WorkerTask, run_name: str, storage: str,
                  callbacks=()):
    import ray.train
    from ray.train.torch import TorchTrainer

    train = task.spec.train
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"task": task},
        # Ray sets each worker's torch/OMP thread count from its CPU share.
        scaling_config=ray.train.ScalingConfig(num_workers=request.workers, use_gpu=train.use_gpu,
                                               resources_per_worker={"CPU": request.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage, callbacks=list(callbacks),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=2)),
        datasets={"train": training_dataset(dataset),
                  # Small, and read at every evaluation: materialised once instead of re-read each time.
                  "valid": dataset.ray_dataset("valid").materialize()},
    )


def run_training(request: TrainRequest, console=None) -> TrainResult:
    dataset, spec = prepare_run(request)
    workdir = Path(request.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking.resolve_tracking_uri(request.tracking_uri, workdir)
    tracking.check_reachable(tracking_uri)
    workers = WorkerGroup.of(request.workers, request.cpus_per_worker, spec.train.use_gpu)
    join_cluster(workers, request.address)
    run_name = request.name or f"{spec.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, workdir)
    run_id, resumed, task = open_run(request, dataset, spec, tracking_uri, experiment_id, run_name)
    if console:
        verb = "resuming" if resumed else "starting"
        console.print(f"{verb} run [bold]{run_name}[/] (MLflow run {run_id}, {tracking_uri})")

    try:
        with capacity_watch(workers, console.print if console else print):
            result = build_trainer(request, dataset, task, run_name, storage_root(request)).fit()
    except Exception as exc:
        fail_run(tracking_uri, run_id, f"training run {run_name} failed: {root_cause(exc)}", exc)
    if result.metrics.get("stop_reason"):
        fail_run(tracking_uri, run_id, f"training run {run_name} stopped: {result.metrics['stop_reason']}")
    if result.checkpoint is None:
        fail_run(tracking_uri, run_id, f"training run {run_name} produced no checkpoint")

    checkpoint_dir = local_copy(result.checkpoint.path, request.storage)
    deliver_pending_metrics(checkpoint_dir, tracking_uri, run_id, run_name)
    mlflow_client = tracking.client(tracking_uri)
    mlflow_client.log_artifacts(run_id, checkpoint_dir, artifact_path="checkpoint")
    test_metrics = {}
    if request.final_eval:
        samples = spec.train.final_iw_samples
        test_metrics = evaluate_checkpoint(checkpoint_dir, dataset.location, "test", iw_samples=samples,
                                           word_samples=samples)
        tracking.MetricLogger(tracking_uri, run_id).log(
            {f"test/{k}": v for k, v in test_metrics.items()}, step=int(result.metrics.get("step", 0)))
    tracking.log_training_figures(tracking_uri, run_id)
    if not dataset.is_text:
        log_frame_samples(checkpoint_dir, tracking_uri, run_id)
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return TrainResult(run_name, run_id, tracking_uri, checkpoint_dir, dict(result.metrics), test_metrics)


def storage_root(request: TrainRequest) -> str:
    """Where Ray Train keeps checkpoints: `--storage` (a URI or a path every node sees, on a multi-node cluster),
    else `<workdir>/ray`."""
    return request.storage or str(Path(request.workdir).absolute() / "ray")


def fail_run(tracking_uri: str, run_id: str, reason: str, cause: BaseException | None = None):
    """Mark the MLflow run FAILED with its reason (if MLflow can be reached) and raise the one-line error."""
    try:
        mlflow_client = tracking.client(tracking_uri)
        mlflow_client.set_tag(run_id, "seqlvm.failure", reason[:5000])
        mlflow_client.set_terminated(run_id, status="FAILED")
    except Exception:  # the reason still reaches the user below
        pass
    raise SeqlvmError(reason) from cause


FINAL_SAMPLES = 4


def log_frame_samples(checkpoint_dir: str, tracking_uri: str, run_id: str) -> None:
    """A few prior samples of the trained frame model, rendered (sound, ink, notes) into the run's `samples/`."""
    import tempfile

    import torch

    from seqlvm.render import render_prior_samples
    torch.manual_seed(0)
    model, _, payload = load_model(checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        paths = render_prior_samples(model, payload["data_info"], FINAL_SAMPLES, None, tmp)
        tracking.log_samples(tracking_uri, run_id, paths)
