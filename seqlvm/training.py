"""`seqlvm train`: the driver. Builds the run configuration, opens (or resumes) the MLflow run, fits a Ray Train
TorchTrainer over the prepared shards, then evaluates the final checkpoint on the test split and logs the
checkpoint and figures to MLflow."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.shards import absolute_location, read_manifest
from pipelines.stream import local_batches, ray_dataset, read_split
from seqlvm import tracking
from seqlvm.checkpoint import CHECKPOINT_FILE, load_model, local_copy, read_checkpoint
from seqlvm.config import RunConfig, build_run_config
from seqlvm.errors import SeqlvmError
from seqlvm.evaluation import evaluate
from seqlvm.models import check_modality, model_class
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
    storage: str | None = None
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


def data_info(manifest: dict) -> dict:
    """What a model needs to know about its data beyond the weights, kept in every checkpoint: the modality,
    and for frames their size, the standardisation to undo and how to render them (sound, ink, notes)."""
    if manifest.get("modality", "text") == "text":
        return {"modality": "text"}
    train = manifest["splits"]["train"]
    return {"modality": manifest["modality"], "frame_dim": manifest["frame_dim"], "output": manifest["output"],
            "normalisation": manifest.get("normalisation"), "render": manifest.get("render", {}),
            "mean_steps": round(train["steps"] / max(1, train["sequences"]))}


def train_sequences(manifest: dict) -> int:
    train = manifest["splits"]["train"]
    return train.get("sentences", train.get("sequences", 0))


def build_payload(request: TrainRequest, run_config, vocab: Vocab | None, manifest: dict, tracking_uri: str,
                  run_id: str) -> dict:
    """Everything a worker needs, as plain data: the run config (also stored in checkpoints), the vocabulary
    (text) or frame size, where the data is and which MLflow run to log to."""
    run_config_dict = {"model_name": run_config.model_name, "model": run_config.model,
                       "train": dataclasses.asdict(run_config.train)}
    return {**run_config_dict, "run_config": run_config_dict, "vocab": vocab.words if vocab else None,
            "input_size": len(vocab) if vocab else int(manifest["frame_dim"]), "data_info": data_info(manifest),
            "data_dir": absolute_location(request.data_dir), "tracking_uri": tracking_uri,
            "mlflow_run_id": run_id}


def build_trainer(request: TrainRequest, payload: dict, run_name: str, storage: str, callbacks=()):
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
            name=run_name, storage_path=storage, callbacks=list(callbacks),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train_cfg["keep_checkpoints"]),
            failure_config=ray.train.FailureConfig(max_failures=2)),
        datasets={"train": training_dataset(request.data_dir),
                  # Small, and read at every evaluation: materialised once instead of re-read each time.
                  "valid": ray_dataset(request.data_dir, "valid").materialize()},
    )


# A training split up to this size in memory is materialised in the object store once: each epoch is a new
# execution of the dataset, and re-reading small files costs seconds an epoch, which dominates on corpora of a
# few hundred sequences (JSB Chorales: 17 steps an epoch).
MATERIALISE_BYTES = 64 * 2**20


def training_dataset(data_dir: str, materialise_bytes: int = MATERIALISE_BYTES):
    """The training split in a new random shard order each epoch (rows are shuffled further in the workers'
    local buffers): from memory when it is small, otherwise streamed with the order of the shard files shuffled
    at each read (`randomize_block_order` would hold every block of the epoch in the object store at once)."""
    manifest = read_manifest(data_dir)
    train = manifest["splits"]["train"]
    values = train["tokens"] if manifest["modality"] == "text" else train["steps"] * manifest["frame_dim"]
    if values * 4 <= materialise_bytes:
        return ray_dataset(data_dir, "train").materialize().randomize_block_order()
    return ray_dataset(data_dir, "train", shuffle_files=True)


def data_defaults(manifest: dict) -> dict:
    """Model fields the data sets unless the config does: a frame model's output distribution, and the longest
    text a fixed-size model (the hybrid VAE's deconvolution) must produce."""
    if manifest.get("modality") != "text":
        return {"output": manifest.get("output")}
    options = manifest.get("options", {})
    longest = options.get("fragment_length") or options.get("max_length")
    return {"max_length": longest} if longest else {}


def load_inputs(request: TrainRequest) -> tuple[dict, Vocab | None, RunConfig]:
    """The data's manifest, its vocabulary (None for frame data) and the run config, all checked before anything
    starts. The model defaults to the sentence VAE for text and the VRNN for frames, and a frame model's output
    distribution to the one the manifest names (Gaussian for audio, bivariate GMM + pen for strokes, Bernoulli
    for piano rolls)."""
    manifest = read_manifest(request.data_dir)
    modality = manifest.get("modality")
    is_text = modality == "text"
    overrides = list(request.overrides)
    if request.max_steps is not None:
        overrides.append(f"train.max_steps={request.max_steps}")
    run_config, _ = build_run_config(model_class, request.config_file, overrides, request.model_name,
                                     default_model="sentence-vae" if is_text else "vrnn",
                                     model_defaults=data_defaults(manifest))
    check_modality(run_config.model_name, modality, request.data_dir)
    for split in ("valid", "test") if request.final_eval else ("valid",):  # prepare never leaves train empty
        if not manifest["splits"][split]["shards"]:
            raise SeqlvmError(f"{request.data_dir}: the {split} split is empty; prepare the data again with a "
                              f"larger --{split}-fraction")
    if request.workers < 1 or request.cpus_per_worker <= 0:
        raise SeqlvmError("--workers must be at least 1 and --cpus-per-worker above 0")
    vocab = Vocab.of_dataset(request.data_dir) if is_text else None
    return manifest, vocab, run_config


def open_run(request: TrainRequest, inputs: tuple[dict, Vocab | None, RunConfig], tracking_uri: str,
             experiment_id: str, run_name: str, tags: dict | None = None) -> tuple[str, bool, dict]:
    """Start (or find again, by name) the MLflow run, log its parameters and build the workers' payload.
    Returns (run id, resumed, payload)."""
    manifest, vocab, run_config = inputs
    run_id, resumed = tracking.start_or_resume_run(tracking_uri, experiment_id, run_name, {
        "seqlvm.model": run_config.model_name, "seqlvm.data_dir": absolute_location(request.data_dir),
        "seqlvm.data_source": manifest.get("source", ""), "seqlvm.data_fingerprint": manifest.get("fingerprint", ""),
        **(tags or {})})
    payload = build_payload(request, run_config, vocab, manifest, tracking_uri, run_id)
    size_param = {"data.vocab_size": len(vocab)} if vocab else {"data.frame_dim": payload["input_size"]}
    tracking.log_params(tracking_uri, run_id, {
        **tracking.flatten("", payload["run_config"]), "workers": request.workers,
        "data.modality": manifest["modality"], "data.sequences_train": train_sequences(manifest), **size_param})
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
        result = build_trainer(request, payload, run_name, storage_root(request)).fit()
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
        samples = run_config.train.final_iw_samples
        test_metrics = evaluate_checkpoint(checkpoint_dir, request.data_dir, "test", iw_samples=samples,
                                           word_samples=samples)
        tracking.MetricLogger(tracking_uri, run_id).log(
            {f"test/{k}": v for k, v in test_metrics.items()}, step=int(result.metrics.get("step", 0)))
    tracking.log_training_figures(tracking_uri, run_id)
    if payload["vocab"] is None:
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


FINAL_SAMPLES = 4


def log_frame_samples(checkpoint_dir: str, tracking_uri: str, run_id: str) -> None:
    """A few prior samples of the trained frame model, rendered (sound, ink, notes) into the run's `samples/`."""
    import tempfile

    import torch

    from seqlvm.render import log_samples, render_prior_samples
    torch.manual_seed(0)
    model, _, payload = load_model(checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        log_samples(tracking_uri, run_id, render_prior_samples(model, payload["data_info"], FINAL_SAMPLES, None, tmp))


def root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def evaluate_checkpoint(checkpoint: str, data_dir: str | None, split: str = "test", iw_samples: int = 500,
                        batch_size: int = 64, chunk: int | None = None, limit: int | None = None,
                        tracking_uri: str | None = None, console=None, seed: int = 0, word_samples: int = 100) -> dict:
    """Metrics of a checkpoint on a split. Seeded, so two checkpoints compared on the same data see the same
    noise in their sampled bounds. On a words dataset, also the word task's metrics (cross-entropies to the
    word distributions with `word_samples` importance samples a word, samples in the vocabulary, mutual
    information)."""
    import torch

    torch.manual_seed(seed)
    model, _, payload = load_model(checkpoint, tracking_uri)
    data_dir = data_dir or payload.get("data_dir")
    if not data_dir:
        raise SeqlvmError(f"{checkpoint}: the checkpoint does not record its data; pass --data DIR")
    check_same_kind_of_data(payload, data_dir)
    sequences = read_split(data_dir, split, limit)
    batches = list(local_batches(sequences, batch_size, bucket_factor=20))
    if console is not None:
        from rich.progress import track
        batches = track(batches, console=console, transient=True,
                        description=f"evaluating {len(sequences):,} sequences, {iw_samples} importance samples")
    metrics = evaluate(model, batches, iw_samples, chunk)
    if read_manifest(data_dir).get("task") == "words":
        from seqlvm.word_metrics import word_task_metrics
        if console is not None:
            console.print(f"word-task metrics: every word type, {word_samples} importance samples each")
        metrics.update(word_task_metrics(model, data_dir, num_samples=word_samples))
    return metrics


def check_same_kind_of_data(payload: dict, data_dir: str) -> None:
    """A model evaluates only data like its training data: the same vocabulary, or frames of the same kind."""
    manifest = read_manifest(data_dir)
    if payload.get("vocab") is not None:
        if manifest.get("modality") != "text" or Vocab.of_dataset(data_dir).words != payload["vocab"]:
            raise SeqlvmError(f"{data_dir}: its vocabulary differs from the checkpoint's; "
                              "evaluate on data prepared with the same vocabulary")
        return
    trained_on = payload.get("data_info", {})
    kind = (manifest.get("modality"), manifest.get("frame_dim"))
    if kind != (trained_on.get("modality"), trained_on.get("frame_dim")):
        raise SeqlvmError(f"{data_dir}: {manifest.get('modality')} data of {manifest.get('frame_dim')}-dimensional "
                          f"frames, but the model was trained on {trained_on.get('modality')} frames of "
                          f"{trained_on.get('frame_dim')}")
