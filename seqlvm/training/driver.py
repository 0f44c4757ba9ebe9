"""`seqlvm train`: the driver. Opens (or resumes) the run's MLflow run, fits a Ray Train TorchTrainer over the
prepared shards, then ends the run: the metrics its last checkpoint holds, the checkpoint and the test-split
evaluation logged to MLflow, and its figures."""
from __future__ import annotations

import time
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.errors import root_cause
from seqlvm import run_log, tracking
from seqlvm.checkpoint import load_model, local_copy
from seqlvm.cluster.ceiling import WorkerGroup
from seqlvm.cluster.ray_runtime import capacity_watch, join_cluster
from seqlvm.training.evaluate import evaluate_checkpoint
from seqlvm.training.request import TrainRequest, TrainResult, prepare_run
from seqlvm.training.tracked_run import TrackedRun
from seqlvm.training.worker import WorkerTask, train_loop_per_worker


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
        # Workers read their share of the training split themselves, as their epoch plan says (seqlvm/training/
        # data.py). Validation is small, and read at every evaluation: materialised once instead of re-read.
        datasets={"valid": dataset.ray_dataset("valid").materialize()},
    )


def run_training(request: TrainRequest, console=None) -> TrainResult:
    dataset, spec = prepare_run(request)
    workdir = Path(request.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    run_name = request.name or f"{spec.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = tracking.resolve_tracking_uri(request.tracking_uri, workdir)
    tracking.check_reachable(tracking_uri)
    if request.quiet:
        run_log.divert(log_path(workdir, run_name), echo_progress=True)
    workers = WorkerGroup.of(request.workers, request.cpus_per_worker, spec.train.use_gpu)
    join_cluster(workers, request.address)
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, workdir)
    run = TrackedRun.open(tracking_uri, experiment_id, run_name, spec, dataset, request.workers)
    if console:
        verb = "resuming" if run.resumed else "starting"
        console.print(f"{verb} run [bold]{run_name}[/] (MLflow run {run.run_id}, {tracking.redact(tracking_uri)})")
        if request.quiet:
            console.print(f"Ray's and MLflow's output: {log_path(workdir, run_name)} (--verbose shows it here)")

    try:
        with capacity_watch(workers, console.print if console else print):
            batch_log = str(batch_log_path(workdir, run_name)) if spec.train.batch_log else None
            trainer = build_trainer(request, dataset, WorkerTask.of(spec, dataset, run, batch_log), run_name,
                                    storage_root(request))
            result = trainer.fit()
    except Exception as exc:
        run.fail(f"training run {run_name} failed: {root_cause(exc)}", exc)
    if result.checkpoint is None:
        run.fail(f"training run {run_name} produced no checkpoint")
    checkpoint_dir = local_copy(result.checkpoint.path, request.storage)
    if result.metrics.get("stop_reason"):
        run.fail(f"training run {run_name} stopped: {result.metrics['stop_reason']}", checkpoint_dir=checkpoint_dir)

    run.deliver_pending(checkpoint_dir)
    mlflow_client = tracking.client(tracking_uri)
    mlflow_client.log_artifacts(run.run_id, checkpoint_dir, artifact_path="checkpoint")
    test_metrics = {}
    if request.final_eval:
        samples = spec.train.final_iw_samples
        test_metrics = evaluate_checkpoint(checkpoint_dir, dataset.location, "test", iw_samples=samples,
                                           word_samples=samples)
        tracking.MetricLogger(tracking_uri, run.run_id).log(
            {f"test/{k}": v for k, v in test_metrics.items()}, step=int(result.metrics.get("step", 0)))
    if not dataset.is_text:
        log_frame_samples(checkpoint_dir, tracking_uri, run.run_id)
    run.close()
    return TrainResult(run_name, run.run_id, tracking_uri, checkpoint_dir, dict(result.metrics), test_metrics)


def log_path(workdir: Path, run_name: str) -> Path:
    """Where a quiet run's Ray, Train and MLflow output goes."""
    return workdir / "logs" / f"{run_name}.log"


def batch_log_path(workdir: Path, run_name: str) -> Path:
    """Where a run with `train.batch_log` logs its batches: one JSON line per worker and step (every node of a
    multi-node cluster writes its own copy of this path)."""
    return workdir / "logs" / f"{run_name}.batches.jsonl"


def storage_root(request: TrainRequest) -> str:
    """Where Ray Train keeps checkpoints: `--storage` (a URI or a path every node sees, on a multi-node cluster),
    else `<workdir>/ray`."""
    return request.storage or str(Path(request.workdir).absolute() / "ray")


FINAL_SAMPLES = 4


def log_frame_samples(checkpoint_dir: str, tracking_uri: str, run_id: str) -> None:
    """A few prior samples of the trained frame model, rendered (sound, ink, notes) into the run's `samples/`."""
    import tempfile

    import torch

    from seqlvm.render import render_prior_samples
    torch.manual_seed(0)
    loaded = load_model(checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        paths = render_prior_samples(loaded.model, loaded.data, FINAL_SAMPLES, None, tmp)
        tracking.log_samples(tracking_uri, run_id, paths)
