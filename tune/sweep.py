"""`seqlvm tune`: a Ray Tune sweep whose trials are real training runs.

Each trial is a function trainable that builds and fits a Ray Train `TorchTrainer` (the Train V2 pattern);
Train reports reach Tune through `TuneReportCallback`. Optuna proposes the configurations (TPE by default,
a Gaussian process or random search on request), ASHA stops unpromising trials. MLflow gets a parent run for
the sweep and a nested child run per trial; at the end the best checkpoint is evaluated, registered as a new
model version, and made `champion` if it beats the current one. This module is the driver; the trial, the search
and the champion have modules of their own.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError, root_cause
from pipelines.shards import absolute_location
from seqlvm import run_log, tracking
from seqlvm.cluster.ceiling import WorkerGroup
from seqlvm.cluster.ray_runtime import capacity_watch, join_cluster
from seqlvm.evaluation import COLLAPSE_PENALTY, GUARD_FIELDS, CollapseGuard
from seqlvm.models import model_class
from seqlvm.tracking import registry
from seqlvm.training import RunSpec, keys_set_by, load_config_file, prepare_run, try_one_step
from tune import summary
from tune.champion import register_best
from tune.progress import TrialProgress
from tune.request import SweepRequest, SweepResult
from tune.search import SCHEDULERS, SEARCHES, build_scheduler, build_search, default_startup_trials
from tune.space import Dimension, default_space, leaving_alone, parse_space
from tune.trial import TrialContext, run_trial

REQUEST_FILE = "seqlvm_sweep.json"  # the sweep's settings, read back by --resume
LOG_FILE = "sweep.log"  # Ray's, Tune's and MLflow's output, unless --verbose
# CPUs left to Ray Data's read tasks when deciding how many trials run at once (see seqlvm/ray_runtime.py).
DATA_CPUS = 2


# The defaults of the collapse guard (docs/sweeps-and-registry.md), from benchmarks/latent_use.py (docs/results.md):
# sentence VAEs whose decodes ignore z showed 0-3 % distinct posterior decodes and no F1 gain over other inputs,
# though one had 0.83 nats of I(x; z); those that used z, 40-90 % distinct decodes and a gain of 0.11-0.22. The
# minimums sit between the two.
DEFAULT_MIN_MUTUAL_INFO = 0.5
DEFAULT_MIN_DECODE_DISTINCT = 0.3
DEFAULT_MIN_DECODE_F1_GAIN = 0.05
DEFAULT_MIN_KL = 0.1
OBJECTIVE = f"validation NLL bound, + {COLLAPSE_PENALTY:g} for a trial the collapse guard rejects"


class SweepInterrupted(SeqlvmError):
    """The sweep stopped before its last trial (Ctrl-C); its state is saved for --resume."""

    exit_code = 130


# ------------------------------------------------------------------------------------------ configuration

def sweep_space(request: SweepRequest, spec: RunSpec, words: bool = True) -> tuple[list[Dimension], CollapseGuard]:
    """The dimensions (the file's `tune.space`, else the default for the spec's model, without the keys the
    config's sections and the overrides set), each checked by setting it in the spec, and the collapse guard the
    trials are judged by (`words`: whether the data's tokens are words, see `default_guard`)."""
    raw = load_config_file(request.config_file).get("tune") or {}
    source = request.config_file or "defaults"
    unknown = set(raw) - {"space", *GUARD_FIELDS}
    if unknown:
        raise SeqlvmError(f"{source}: unknown key tune.{sorted(unknown)[0]} "
                          f"(known: space, {', '.join(GUARD_FIELDS)})")
    model = model_class(spec.model_name)
    model_fields = {f.name for f in dataclasses.fields(model.config_class)}
    if raw.get("space"):
        dims = parse_space(raw["space"], source)
    else:
        recipe = model.sweep_recipe(spec.train.max_steps)
        dims = (parse_space(recipe, f"the {model.name} default space") if recipe
                else default_space(model_fields, spec.train.max_steps, model.has_latent))
        chosen = keys_set_by(request.config_file, request.overrides, spec.model_name)
        dims = leaving_alone(dims, {key: spec.value(key) for key in chosen})
    for dim in dims:
        for value in dim.extremes():
            spec.with_values({dim.name: value}, source=f"{source}: tune.space.{dim.name}={value!r}")
    return dims, collapse_guard(request, raw, default_guard(model, words), source)


def check_trials_run(dims: list[Dimension], spec: RunSpec, dataset: PreparedDataset, source: str) -> None:
    """One training step of the trials at the space's corners (every dimension at its first extreme, then at its
    last), on the driver: a value the validators allow but the model cannot train with fails the sweep before Ray
    starts, not trial by trial."""
    for corner in (0, -1):
        values = {dim.name: dim.extremes()[corner] for dim in dims}
        try:
            try_one_step(spec.with_values(values), dataset, source)
        except SeqlvmError as exc:
            raise SeqlvmError(f"tune.space at {values}: {exc}") from None


def collapse_guard(request: SweepRequest, tune_section: dict, default: CollapseGuard, source: str) -> CollapseGuard:
    """The guard: each minimum from the command line, else the config's `tune:` section, else `default`; none at
    all with --allow-collapsed."""
    if request.allow_collapsed:
        return CollapseGuard()
    values = {}
    for key in GUARD_FIELDS:
        value = getattr(request, key)
        value = value if value is not None else tune_section.get(key, getattr(default, key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SeqlvmError(f"{source}: tune.{key} must be a number >= 0, got {value!r}")
        values[key] = int(value) if key == "min_active_units" else float(value)
    return CollapseGuard(**values)


def default_guard(model, words: bool = True) -> CollapseGuard:
    """Collapse-aware by default: a model whose latent is unused cannot win. A global latent must carry
    DEFAULT_MIN_MUTUAL_INFO nats about its sequence in one active unit at least, and a sentence latent's posterior
    decodes of words must be distinct and closer to their own input than to another's (of characters, the unigram
    F1 cannot tell: a hybrid VAE with 6 nats of MI scored 0.645 against its input and against another); a model
    with latents per step (no mutual information measured) needs a KL of DEFAULT_MIN_KL nats per sequence. Models
    without a latent: none."""
    if not model.has_latent:
        return CollapseGuard()
    if model.decodes_sentences and words:
        return CollapseGuard(min_mutual_info=DEFAULT_MIN_MUTUAL_INFO, min_active_units=1,
                             min_decode_distinct=DEFAULT_MIN_DECODE_DISTINCT,
                             min_decode_f1_gain=DEFAULT_MIN_DECODE_F1_GAIN)
    if model.has_global_latent:
        return CollapseGuard(min_mutual_info=DEFAULT_MIN_MUTUAL_INFO, min_active_units=1)
    return CollapseGuard(min_kl=DEFAULT_MIN_KL)


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
                               address=request.address, workdir=request.workdir, quiet=request.quiet)


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
    if request.scheduler == "asha" and spec.train.eval_every > max_steps:
        raise SeqlvmError(f"--scheduler asha judges trials at their evaluations, but train.eval_every "
                          f"({spec.train.eval_every}) is longer than the run ({max_steps} steps); lower "
                          "train.eval_every or use --scheduler none")
    dims, guard = sweep_space(request, spec, dataset.has_words)
    check_trials_run(dims, spec, dataset, request.config_file or "the sweep")
    spec = spec.with_values({f"train.{k}": v for k, v in guard.to_dict().items()})
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
    if request.quiet:
        run_log.divert(folder / LOG_FILE)
    workers = WorkerGroup.of(request.workers, request.cpus_per_worker, spec.train.use_gpu)
    join_cluster(workers, request.address)
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, workdir)
    parent_run_id, _ = tracking.start_or_resume_run(tracking_uri, experiment_id, name, {
        "seqlvm.kind": "sweep", "seqlvm.model": spec.model_name, "seqlvm.data_source": dataset.source,
        "seqlvm.data_fingerprint": dataset.fingerprint})
    tracking.log_params(tracking_uri, parent_run_id, {
        "search": request.search, "scheduler": request.scheduler, "num_samples": request.num_samples,
        "seed": request.seed, **{f"guard.{k}": v for k, v in guard.to_dict().items()},
        "objective": OBJECTIVE, "workers": request.workers, "max_steps": max_steps,
        "space": json.dumps([dataclasses.asdict(d) for d in dims])})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REQUEST_FILE).write_text(json.dumps(dataclasses.asdict(request), indent=2))
    if console:
        console.print(f"{'resuming' if resume else 'starting'} sweep [bold]{name}[/]: {request.num_samples} "
                      f"trials, {request.search} search, scheduler {request.scheduler} "
                      f"(MLflow run {parent_run_id}, {tracking_uri})")
        console.print(f"objective: {OBJECTIVE}; collapse guard: {guard.describe()}")
        if request.quiet:
            console.print(f"Ray's and MLflow's output: {folder / LOG_FILE} (--verbose shows it here)")

    context = TrialContext(trial_request, dataset, spec, tracking_uri, experiment_id, parent_run_id, name,
                           f"{tune_storage(request)}/{name}/train")
    try:
        with capacity_watch(workers, console.print if console else print):
            callbacks = [TrialProgress(guard, max_steps)] if console else []
            results = build_tuner(request, dims, context, max_steps, spec.train.eval_every, resume, callbacks).fit()
    except Exception as exc:
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
        raise SeqlvmError(f"sweep {name} failed: {root_cause(exc)}") from exc

    done = results.num_terminated + results.num_errors
    if done < request.num_samples:  # Ctrl-C or SIGTERM: Tune saved its state and returned early
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="KILLED")
        raise SweepInterrupted(f"sweep {name} was interrupted before its {request.num_samples} trials finished; "
                               f"continue it with `seqlvm tune --resume --name {name}`")
    rows = summary.trial_rows(results, dims, max_steps)
    summary.end_trial_runs(tracking_uri, experiment_id, name, rows, request.storage)
    summary.log_to_parent(tracking_uri, parent_run_id, rows, dims)
    result = SweepResult(name, parent_run_id, tracking_uri, rows, summary.best_row(rows))
    if result.best is None:
        tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
        raise SeqlvmError(f"sweep {name}: no trial produced a checkpoint (see the trial errors above)")
    if request.register:
        try:
            register_best(request, result, dataset, spec.model_name, guard, console)
        except Exception as exc:
            tracking.client(tracking_uri).set_terminated(parent_run_id, status="FAILED")
            raise SeqlvmError(f"sweep {name}: its trials finished, but registering the best checkpoint "
                              f"({result.best['checkpoint_path']}) failed: {root_cause(exc)}") from exc
    tracking.client(tracking_uri).set_terminated(parent_run_id, status="FINISHED")
    return result


def build_tuner(request: SweepRequest, dims: list[Dimension], context: TrialContext, max_steps: int, eval_every: int,
                resume: bool, callbacks: list):
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
            search_alg=build_search(dims, request.search, request.seed,
                                    request.startup_trials or default_startup_trials(request.num_samples)),
            scheduler=build_scheduler(request.scheduler, max_steps, eval_every),
            metric="objective", mode="min", num_samples=request.num_samples,
            max_concurrent_trials=concurrency(request)),
        run_config=ray_tune.RunConfig(name=request.name, storage_path=storage, verbose=1, callbacks=callbacks),
    )


def tune_storage(request: SweepRequest) -> str:
    """Tune's state and the trials' checkpoints: under `--storage` (shared by every node of a multi-node cluster)
    or `<workdir>/tune`, beside the request file that --resume reads."""
    return f"{request.storage.rstrip('/')}/tune" if request.storage else str(Path(request.workdir).absolute() / "tune")


