"""`seqlvm tune`: a Ray Tune sweep whose trials are real training runs.

Each trial is a function trainable that builds and fits a Ray Train `TorchTrainer` (the Train V2 pattern);
Train reports reach Tune through `TuneReportCallback`. Optuna proposes the configurations (TPE by default,
a Gaussian process or random search on request), ASHA stops unpromising trials. MLflow gets a parent run for
the sweep and a nested child run per trial; at the end the best checkpoint is evaluated, registered as a new
model version, and made `champion` if it beats the current one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError, root_cause
from pipelines.shards import absolute_location
from seqlvm import tracking
from seqlvm.checkpoint import local_copy
from seqlvm.cluster.ray_runtime import ensure_ray
from seqlvm.models import model_class
from seqlvm.tracking import registry
from seqlvm.training import (
    RunSpec,
    TrainRequest,
    build_trainer,
    evaluate_checkpoint,
    load_config_file,
    open_run,
    prepare_run,
)
from tune import summary
from tune.space import Dimension, SpaceSampler, default_space, parse_space

SEARCHES = ("tpe", "gp", "random")
SCHEDULERS = ("asha", "none")
REQUEST_FILE = "seqlvm_sweep.json"  # the sweep's settings, read back by --resume
# CPUs left to Ray Data's read tasks when deciding how many trials run at once (see seqlvm/ray_runtime.py).
DATA_CPUS = 2


class SweepInterrupted(SeqlvmError):
    """The sweep stopped before its last trial (Ctrl-C); its state is saved for --resume."""

    exit_code = 130


@dataclass
class SweepRequest(TrainRequest):
    """What `seqlvm train` takes (shared by every trial), plus the sweep's own settings."""
    num_samples: int = 8
    search: str = "tpe"
    scheduler: str = "asha"
    max_concurrent: int | None = None
    startup_trials: int | None = None
    min_kl: float | None = None
    seed: int = 0
    iw_samples: int = 20
    registered_name: str | None = None
    register: bool = True

    def train_request(self) -> TrainRequest:
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainRequest)}
        return TrainRequest(**{**shared, "data_dir": absolute_location(self.data_dir),
                               "overrides": list(self.overrides)})


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    tracking_uri: str
    rows: list[dict]
    best: dict | None
    registered_name: str | None = None
    version: str | None = None
    decision: registry.PromotionDecision | None = None


# ----------------------------------------------------------------------------------------------- the trial

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


# ------------------------------------------------------------------------------------------ configuration

def sweep_space(request: SweepRequest, spec: RunSpec) -> tuple[list[Dimension], float]:
    """The dimensions (the file's `tune.space`, else the defaults for the spec's model) and the minimum KL, each
    dimension checked by setting it in the spec."""
    raw = load_config_file(request.config_file).get("tune") or {}
    source = request.config_file or "defaults"
    unknown = set(raw) - {"space", "min_kl"}
    if unknown:
        raise SeqlvmError(f"{source}: unknown key tune.{sorted(unknown)[0]} (known: space, min_kl)")
    model = model_class(spec.model_name)
    model_fields = {f.name for f in dataclasses.fields(model.config_class)}
    dims = (parse_space(raw["space"], source) if raw.get("space")
            else default_space(model_fields, spec.train.max_steps, model.has_latent))
    for dim in dims:
        try:
            spec.with_values({dim.name: dim.representative()})
        except SeqlvmError as exc:
            raise SeqlvmError(f"{source}: tune.space.{dim.name}: {exc}") from None
    min_kl = request.min_kl if request.min_kl is not None else float(raw.get("min_kl", 0.0))
    return dims, min_kl


def make_sampler(search: str, seed: int, startup_trials: int):
    """The Optuna sampler behind --search (also used by benchmarks/search_comparison.py)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search == "tpe":  # multivariate + group: dependent and conditional dimensions modelled jointly
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True, group=True)
    if search == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def default_startup_trials(num_samples: int) -> int:
    """Random trials before the Bayesian model takes over: a quarter of the budget, 2 to 10."""
    return max(2, min(10, num_samples // 4))


def build_search(request: SweepRequest, dims: list[Dimension]):
    from ray.tune.search.optuna import OptunaSearch

    startup = request.startup_trials or default_startup_trials(request.num_samples)
    return OptunaSearch(space=SpaceSampler(dims), sampler=make_sampler(request.search, request.seed, startup),
                        metric="objective", mode="min")


def build_scheduler(request: SweepRequest, max_steps: int, eval_every: int):
    if request.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rungs at 1/4 and 1/2 of training: earlier ones would judge trials before their KL annealing has run.
    return ASHAScheduler(time_attr="step", max_t=max_steps, grace_period=max(eval_every, max_steps // 4),
                         reduction_factor=2)


def concurrency(request: SweepRequest) -> int:
    """Trials at once: what the cluster's CPUs hold after Ray Data's share, never more than the trials."""
    import ray

    if request.max_concurrent:
        return request.max_concurrent
    trial_cpus = request.workers * request.cpus_per_worker
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    return int(max(1, min(request.num_samples, (cluster_cpus - DATA_CPUS) // trial_cpus)))


def sweep_folder(workdir: str, name: str) -> Path:
    return Path(workdir).absolute() / "tune" / name


def latest_sweep(workdir: str) -> str:
    found = sorted((Path(workdir).absolute() / "tune").glob(f"*/{REQUEST_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SeqlvmError(f"{Path(workdir) / 'tune'}: no sweep to resume")
    return found[-1].parent.name


def load_resumed_request(request: SweepRequest) -> SweepRequest:
    """A resumed sweep runs with its original settings; only where it logs and which Ray it joins may change."""
    name = request.name or latest_sweep(request.workdir)
    path = sweep_folder(request.workdir, name) / REQUEST_FILE
    if not path.exists():
        raise SeqlvmError(f"{path.parent}: no sweep named {name!r} to resume")
    saved = SweepRequest(**json.loads(path.read_text()))
    return dataclasses.replace(saved, tracking_uri=request.tracking_uri or saved.tracking_uri,
                               address=request.address, workdir=request.workdir)


def check_request(request: SweepRequest) -> None:
    if request.search not in SEARCHES:
        raise SeqlvmError(f"--search must be one of {', '.join(SEARCHES)}, not {request.search!r}")
    if request.scheduler not in SCHEDULERS:
        raise SeqlvmError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, not {request.scheduler!r}")
    if request.num_samples < 1:
        raise SeqlvmError("--num-samples must be at least 1")


# ------------------------------------------------------------------------------------------------ driver

def run_sweep(request: SweepRequest, resume: bool = False, console=None) -> SweepResult:
    if resume:
        request = load_resumed_request(request)
    else:  # saved for --resume, which may run from another directory
        request = dataclasses.replace(request, data_dir=absolute_location(request.data_dir),
                                      config_file=request.config_file and str(Path(request.config_file).absolute()))
    check_request(request)
    trial_request = request.train_request()
    dataset, spec = prepare_run(trial_request)
    max_steps = spec.train.max_steps
    if max_steps is None:
        raise SeqlvmError("a sweep needs a training length: set train.max_steps in the config or --max-steps")
    dims, min_kl = sweep_space(request, spec)
    spec = spec.with_values({"train.min_kl": min_kl})
    if request.register:
        registry.check_model_code()

    name = request.name or f"sweep-{spec.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    request = dataclasses.replace(request, name=name)
    folder = sweep_folder(request.workdir, name)
    if not resume and folder.exists():
        raise SeqlvmError(f"{folder}: a sweep named {name!r} exists; pass --resume to continue it, "
                          "or another --name")
    workdir = Path(request.workdir).absolute()
    tracking_uri = tracking.resolve_tracking_uri(request.tracking_uri, workdir)
    tracking.check_reachable(tracking_uri)
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, workdir)
    parent_run_id, _ = tracking.start_or_resume_run(tracking_uri, experiment_id, name, {
        "seqlvm.kind": "sweep", "seqlvm.model": spec.model_name, "seqlvm.data_source": dataset.source,
        "seqlvm.data_fingerprint": dataset.fingerprint})
    tracking.log_params(tracking_uri, parent_run_id, {
        "search": request.search, "scheduler": request.scheduler, "num_samples": request.num_samples,
        "seed": request.seed, "min_kl": min_kl, "workers": request.workers, "max_steps": max_steps,
        "space": json.dumps([dataclasses.asdict(d) for d in dims])})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REQUEST_FILE).write_text(json.dumps(dataclasses.asdict(request), indent=2))
    if console:
        console.print(f"{'resuming' if resume else 'starting'} sweep [bold]{name}[/]: {request.num_samples} "
                      f"trials, {request.search} search, scheduler {request.scheduler} "
                      f"(MLflow run {parent_run_id}, {tracking_uri})")

    ensure_ray(request.workers * request.cpus_per_worker, request.address)
    context = TrialContext(trial_request, dataset, spec, tracking_uri, experiment_id, parent_run_id, name,
                           f"{tune_storage(request)}/{name}/train")
    try:
        results = build_tuner(request, dims, context, max_steps, spec.train.eval_every, resume).fit()
    except Exception as exc:
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
        raise SeqlvmError(f"sweep {name} failed: {root_cause(exc)}") from exc

    done = results.num_terminated + results.num_errors
    if done < request.num_samples:  # Ctrl-C or SIGTERM: Tune saved its state and returned early
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="KILLED")
        raise SweepInterrupted(f"sweep {name} was interrupted before its {request.num_samples} trials finished; "
                               f"continue it with `seqlvm tune --resume --name {name}`")
    rows = summary.trial_rows(results, dims, max_steps)
    summary.finish_child_runs(tracking_uri, experiment_id, name, rows)
    summary.log_to_parent(tracking_uri, parent_run_id, rows, dims)
    result = SweepResult(name, parent_run_id, tracking_uri, rows, summary.best_row(rows))
    if result.best is None:
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
        raise SeqlvmError(f"sweep {name}: no trial produced a checkpoint (see the trial errors above)")
    if request.register:
        try:
            register_best(request, result, dataset, spec.model_name, min_kl, console)
        except Exception as exc:
            tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
            raise SeqlvmError(f"sweep {name}: its trials finished, but registering the best checkpoint "
                              f"({result.best['checkpoint_path']}) failed: {root_cause(exc)}") from exc
    tracking.client(tracking_uri).set_terminated(parent_run_id, status="FINISHED")
    return result


def build_tuner(request: SweepRequest, dims: list[Dimension], context: TrialContext, max_steps: int, eval_every: int,
                resume: bool):
    from ray import tune as ray_tune

    # The trial's driver needs almost nothing; its TorchTrainer reserves the workers' CPUs itself.
    trainable = ray_tune.with_resources(ray_tune.with_parameters(run_trial, context=context), {"CPU": 0.01})
    storage = tune_storage(request)
    if resume and ray_tune.Tuner.can_restore(f"{storage}/{request.name}"):
        return ray_tune.Tuner.restore(f"{storage}/{request.name}", trainable, resume_unfinished=True,
                                      resume_errored=True)
    return ray_tune.Tuner(
        trainable,
        tune_config=ray_tune.TuneConfig(
            search_alg=build_search(request, dims), scheduler=build_scheduler(request, max_steps, eval_every),
            metric="objective", mode="min", num_samples=request.num_samples,
            max_concurrent_trials=concurrency(request)),
        run_config=ray_tune.RunConfig(name=request.name, storage_path=storage, verbose=1),
    )


def tune_storage(request: SweepRequest) -> str:
    """Tune's state and the trials' checkpoints: under `--storage` (shared by every node of a multi-node cluster)
    or `<workdir>/tune`, beside the request file that --resume reads."""
    return f"{request.storage.rstrip('/')}/tune" if request.storage else str(Path(request.workdir).absolute() / "tune")


def register_best(request: SweepRequest, result: SweepResult, dataset: PreparedDataset, model_name: str, min_kl: float,
                  console=None) -> None:
    """Evaluate the best trial's checkpoint on the whole validation and test splits, register it, and move
    the champion alias if it wins. Skipped when a resumed sweep had registered already."""
    client = tracking.client(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    name = request.registered_name or registry.default_registered_name(model_name, dataset.source or "data")
    result.registered_name = name
    if "seqlvm.registered_version" in parent.data.tags:
        result.version = parent.data.tags["seqlvm.registered_version"]
        return
    best = result.best
    checkpoint = Path(local_copy(best["checkpoint_path"], request.storage)) / "model.pt"
    if console:
        console.print(f"evaluating the best trial {best['trial']} on the validation and test splits "
                      f"({request.iw_samples} importance samples)")
    valid = evaluate_checkpoint(str(checkpoint), request.data_dir, "valid", iw_samples=request.iw_samples)
    test = evaluate_checkpoint(str(checkpoint), request.data_dir, "test", iw_samples=request.iw_samples)
    tags = {"seqlvm.sweep": result.name, "seqlvm.trial_id": best["trial"], "seqlvm.model": model_name,
            "seqlvm.data_source": dataset.source, "seqlvm.data_fingerprint": dataset.fingerprint,
            "seqlvm.min_kl": min_kl, "seqlvm.params": json.dumps(best["params"]),
            **{f"valid.{k}": _fmt(v) for k, v in valid.items()}, **{f"test.{k}": _fmt(v) for k, v in test.items()}}
    result.version = registry.register_checkpoint(result.tracking_uri, best["run_id"], checkpoint, name, tags,
                                                  dataset.manifest)
    result.decision = registry.promote_if_better(client, name, result.version, valid["nll_bound"],
                                                 dataset.fingerprint, usable=valid["kl"] >= min_kl)
    client.set_tag(result.parent_run_id, "seqlvm.registered_version", result.version)
    client.set_tag(result.parent_run_id, "seqlvm.registered_name", name)
    tracking.MetricLogger(result.tracking_uri, result.parent_run_id).log(
        {**{f"best/valid_{k}": v for k, v in valid.items()}, **{f"best/test_{k}": v for k, v in test.items()}}, 0)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}" if math.isfinite(value) else str(value)
