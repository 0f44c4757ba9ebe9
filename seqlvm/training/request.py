"""What `seqlvm train` is asked to do (`TrainRequest`), and everything about it checked before Ray starts: the
prepared dataset opened once and the run specification built for it (`prepare_run`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipelines.dataset import PreparedDataset
from pipelines.epochs import check_token_budget
from pipelines.errors import SeqlvmError, root_cause
from seqlvm.cluster.ray_runtime import check_address
from seqlvm.models import check_modality
from seqlvm.training.spec import RunSpec


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
    # Ray's, Train's and MLflow's output into a log file in the run's folder, seqlvm's progress on the terminal
    # (seqlvm.run_log); the command line sets it unless --verbose.
    quiet: bool = False


@dataclass
class TrainResult:
    run_name: str
    mlflow_run_id: str
    tracking_uri: str
    checkpoint_dir: str
    metrics: dict
    test_metrics: dict


def data_defaults(dataset: PreparedDataset) -> dict:
    """Model fields the data sets unless the config does: a frame model's output distribution, and the longest
    text a fixed-size model (the hybrid VAE's deconvolution) must produce."""
    if not dataset.is_text:
        return {"output": dataset.output}
    longest = dataset.options.get("fragment_length") or dataset.options.get("max_length")
    return {"max_length": longest} if longest else {}


def prepare_run(request: TrainRequest) -> tuple[PreparedDataset, RunSpec]:
    """The dataset and the run specification, both checked before anything starts. The model defaults to the
    sentence VAE for text and the VRNN for frames, and a frame model's output distribution to the one the data
    names (Gaussian for audio, bivariate GMM + pen for strokes, Bernoulli for piano rolls)."""
    dataset = PreparedDataset.open(request.data_dir)
    overrides = list(request.overrides)
    if request.max_steps is not None:
        overrides.append(f"train.max_steps={request.max_steps}")
    spec = RunSpec.build(request.config_file, overrides, request.model_name,
                         default_model="sentence-vae" if dataset.is_text else "vrnn",
                         model_defaults=data_defaults(dataset))
    check_modality(spec.model_name, dataset.modality, request.data_dir)
    for split in ("valid", "test") if request.final_eval else ("valid",):  # prepare never leaves train empty
        if not dataset.splits[split].shards:
            raise SeqlvmError(f"{request.data_dir}: the {split} split is empty; prepare the data again with a "
                              f"larger --{split}-fraction")
    if request.workers < 1 or request.cpus_per_worker <= 0:
        raise SeqlvmError("--workers must be at least 1 and --cpus-per-worker above 0")
    if spec.train.max_tokens is not None:
        check_token_budget(dataset.longest_padded("train"), spec.train.max_tokens)
    if dataset.is_text:
        dataset.vocab  # read now: a missing or broken vocabulary is an error before Ray starts
    if request.address or os.environ.get("RAY_ADDRESS"):
        check_address(request.address or os.environ["RAY_ADDRESS"])
    else:
        cores = os.cpu_count() or 1
        if request.workers * request.cpus_per_worker > cores:
            raise SeqlvmError(f"--workers {request.workers} x --cpus-per-worker {request.cpus_per_worker:g} asks for "
                              f"more CPUs than this machine has ({cores}); the local Ray could never place them")
        if spec.train.use_gpu:
            import torch
            if torch.cuda.device_count() < request.workers:
                raise SeqlvmError(f"train.use_gpu=true with {request.workers} workers, but this machine has "
                                  f"{torch.cuda.device_count()} GPUs for the local Ray")
    try_one_step(spec, dataset, request.config_file)
    return dataset, spec


PREFLIGHT_SEQUENCES = 4


def try_one_step(spec: RunSpec, dataset: PreparedDataset, config_file: str | None = None) -> None:
    """Build the model from the final run specification and run one forward and backward pass on a few real
    sequences of the training split, on the driver: a configuration the validators let through but the model
    cannot run with fails here in one line, before Ray starts, instead of in every worker, retried."""
    from pipelines.stream import local_batches

    source = config_file or "the run configuration"
    batch = next(iter(local_batches(dataset.read("train", PREFLIGHT_SEQUENCES), PREFLIGHT_SEQUENCES)))
    try:
        model = spec.build_model(dataset.input_size)
        model.train()
        model(batch, kl_weight=1.0).loss.backward()
    except SeqlvmError:
        raise
    except Exception as exc:  # whatever the model's constructor or forward pass says about a bad value
        raise SeqlvmError(f"{source}: model {spec.model_name} cannot train with this configuration "
                          f"({root_cause(exc)})") from None
