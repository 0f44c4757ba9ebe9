"""`seqlvm train`: the driver. Builds the run configuration, opens (or resumes) the MLflow run, fits a Ray Train
TorchTrainer over the prepared shards, then evaluates the final checkpoint on the test split and logs the
checkpoint and figures to MLflow."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.shards import read_manifest
from pipelines.stream import local_batches, ray_dataset, read_split
from seqlvm import tracking
from seqlvm.checkpoint import load_model
from seqlvm.config import RunConfig, build_run_config
from seqlvm.errors import SeqlvmError
from seqlvm.evaluation import evaluate
from seqlvm.models import model_class
from seqlvm.ray_runtime import ensure_ray
from seqlvm.train_loop import train_loop_per_worker
from seqlvm.vocab import Vocab


@dataclass
class TrainRequest:
    data_dir: str
    model_name: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    workers: int = 1
    cpus_per_worker: float = 1.0
    max_steps: int | None = None
    tracking_uri: str | None = None
    experiment: str = "seqlvm"
    name: str | None = None
    workdir: str = "runs"
    address: str | None = None
    final_eval: bool = True


@dataclass
class TrainResult:
    run_name: str
    mlflow_run_id: str
    tracking_uri: str
    checkpoint_dir: str
    metrics: dict
    test_metrics: dict


def build_payload(request: TrainRequest, run_config, vocab: Vocab, tracking_uri: str, run_id: str) -> dict:
    """Everything a worker needs, as plain data: the run config (also stored in checkpoints), the vocabulary,
    where the data is and which MLflow run to log to."""
    run_config_dict = {"model_name": run_config.model_name, "model": run_config.model,
                       "train": dataclasses.asdict(run_config.train)}
    return {**run_config_dict, "run_config": run_config_dict, "vocab": vocab.words,
            "data_dir": str(Path(request.data_dir).absolute()), "tracking_uri": tracking_uri,
            "mlflow_run_id": run_id}


def build_trainer(request: TrainRequest, payload: dict, run_name: str, storage: Path, callbacks=()):
    import ray.train
    from ray.train.torch import TorchTrainer

    train_cfg = payload["train"]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=payload,
        # Ray sets each worker's torch/OMP thread count from its CPU share.
        scaling_config=ray.train.ScalingConfig(num_workers=request.workers, use_gpu=train_cfg["use_gpu"],
                                               resources_per_worker={"CPU": request.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage), callbacks=list(callbacks),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train_cfg["keep_checkpoints"]),
            failure_config=ray.train.FailureConfig(max_failures=2)),
        # The training split streams, its shards in a new random order each epoch (rows are shuffled further
        # in the workers' local buffers). The validation split is small and read at every evaluation:
        # materialise it once instead of re-reading its files each time.
        datasets={"train": ray_dataset(request.data_dir, "train").randomize_block_order(),
                  "valid": ray_dataset(request.data_dir, "valid").materialize()},
    )


def load_inputs(request: TrainRequest) -> tuple[dict, Vocab, RunConfig]:
    """The data's manifest and vocabulary and the run config, all checked before anything starts."""
    manifest = read_manifest(request.data_dir)
    if manifest.get("modality") != "text":
        raise SeqlvmError(f"{request.data_dir}: modality {manifest.get('modality')!r} is not supported "
                          "by the text models")
    vocab = Vocab.load(Path(request.data_dir) / "vocab.json")
    overrides = list(request.overrides)
    if request.max_steps is not None:
        overrides.append(f"train.max_steps={request.max_steps}")
    run_config, _ = build_run_config(model_class, request.config_file, overrides, request.model_name)
    if request.workers < 1 or request.cpus_per_worker <= 0:
        raise SeqlvmError("--workers must be at least 1 and --cpus-per-worker above 0")
    return manifest, vocab, run_config


def open_run(request: TrainRequest, inputs: tuple[dict, Vocab, RunConfig], tracking_uri: str,
             experiment_id: str, run_name: str, tags: dict | None = None) -> tuple[str, bool, dict]:
    """Start (or find again, by name) the MLflow run, log its parameters and build the workers' payload.
    Returns (run id, resumed, payload)."""
    manifest, vocab, run_config = inputs
    run_id, resumed = tracking.start_or_resume_run(tracking_uri, experiment_id, run_name, {
        "seqlvm.model": run_config.model_name, "seqlvm.data_dir": str(Path(request.data_dir).absolute()),
        "seqlvm.data_source": manifest.get("source", ""), "seqlvm.data_fingerprint": manifest.get("fingerprint", ""),
        **(tags or {})})
    payload = build_payload(request, run_config, vocab, tracking_uri, run_id)
    tracking.log_params(tracking_uri, run_id, {
        **tracking.flatten("", payload["run_config"]), "workers": request.workers,
        "data.sentences_train": manifest["splits"]["train"]["sentences"], "data.vocab_size": len(vocab)})
    return run_id, resumed, payload


def run_training(request: TrainRequest, console=None) -> TrainResult:
    inputs = load_inputs(request)
    run_config = inputs[2]
    workdir = Path(request.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking.resolve_tracking_uri(request.tracking_uri, workdir)
    tracking.check_reachable(tracking_uri)
    run_name = request.name or f"{run_config.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, workdir)
    run_id, resumed, payload = open_run(request, inputs, tracking_uri, experiment_id, run_name)
    if console:
        verb = "resuming" if resumed else "starting"
        console.print(f"{verb} run [bold]{run_name}[/] (MLflow run {run_id}, {tracking_uri})")

    ensure_ray(request.workers * request.cpus_per_worker, request.address)
    try:
        result = build_trainer(request, payload, run_name, workdir / "ray").fit()
    except Exception as exc:
        tracking.client(tracking_uri).set_terminated(run_id, status="FAILED")
        raise SeqlvmError(f"training run {run_name} failed: {root_cause(exc)}") from exc
    if result.checkpoint is None:
        tracking.client(tracking_uri).set_terminated(run_id, status="FAILED")
        raise SeqlvmError(f"training run {run_name} produced no checkpoint")

    checkpoint_dir = result.checkpoint.path
    mlflow_client = tracking.client(tracking_uri)
    mlflow_client.log_artifacts(run_id, checkpoint_dir, artifact_path="checkpoint")
    test_metrics = {}
    if request.final_eval:
        test_metrics = evaluate_checkpoint(checkpoint_dir, request.data_dir, "test",
                                           iw_samples=run_config.train.final_iw_samples)
        tracking.MetricLogger(tracking_uri, run_id).log(
            {f"test/{k}": v for k, v in test_metrics.items()}, step=int(result.metrics.get("step", 0)))
    tracking.log_training_figures(tracking_uri, run_id)
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return TrainResult(run_name, run_id, tracking_uri, checkpoint_dir, dict(result.metrics), test_metrics)


def root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def evaluate_checkpoint(checkpoint: str, data_dir: str | None, split: str = "test", iw_samples: int = 500,
                        batch_size: int = 64, chunk: int | None = None, limit: int | None = None,
                        tracking_uri: str | None = None, console=None, seed: int = 0) -> dict:
    """Metrics of a checkpoint on a split. Seeded, so two checkpoints compared on the same data see the same
    noise in their sampled bounds."""
    import torch

    torch.manual_seed(seed)
    model, _, payload = load_model(checkpoint, tracking_uri)
    data_dir = data_dir or payload.get("data_dir")
    if not data_dir:
        raise SeqlvmError(f"{checkpoint}: the checkpoint does not record its data; pass --data DIR")
    data_vocab = Vocab.load(Path(data_dir) / "vocab.json")
    if data_vocab.words != payload["vocab"]:
        raise SeqlvmError(f"{data_dir}: its vocabulary differs from the checkpoint's; "
                          "evaluate on data prepared with the same vocabulary")
    sequences = read_split(data_dir, split, limit)
    batches = list(local_batches(sequences, batch_size, bucket_factor=20))
    if console is not None:
        from rich.progress import track
        batches = track(batches, console=console, transient=True,
                        description=f"evaluating {len(sequences):,} sentences, {iw_samples} importance samples")
    return evaluate(model, batches, iw_samples, chunk)
