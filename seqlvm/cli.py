"""The `seqlvm` command line: prepare, train, tune, registry, evaluate, sample, models."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from rich.console import Console
from rich.table import Table

from seqlvm.errors import SeqlvmError

console = Console(stderr=True)
# Tables go to stdout; when it is a file or pipe, rich would cut them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)


# `seqlvm prepare MODALITY`: (module, options class, prepare function, what --source accepts)
PREPARERS = {
    "text": ("pipelines.text", "TextOptions", "prepare_text",
             "sentences: .txt/.txt.gz files or folders, hf:owner/name (streamed), builtin:shakespeare"),
    "audio": ("pipelines.audio", "AudioOptions", "prepare_audio",
              "speech: .wav/.flac/.ogg files or folders, builtin:speech-es|speech-ro (recorded), builtin:flite "
              "(synthetic)"),
    "strokes": ("pipelines.strokes", "StrokeOptions", "prepare_strokes",
                "handwriting: IAM-OnDB lineStrokes XML files or folders, builtin:kanjivg, builtin:lasa"),
    "words": ("pipelines.words", "WordOptions", "prepare_words",
              "English words by frequency, one character a token (the word-generation task of the dssm model): "
              "wordfreq:en"),
    "midi": ("pipelines.midi", "MidiOptions", "prepare_midi",
             "piano rolls: .mid files or folders, a Boulanger-Lewandowski .pickle, an .npz of rolls, "
             "builtin:bach, builtin:folk"),
}


def _preparer(modality: str):
    import importlib

    module, options_class, function, _ = PREPARERS[modality]
    module = importlib.import_module(module)
    return getattr(module, options_class), getattr(module, function)


def _add_options_flags(parser, options_class) -> None:
    """One flag per field of a reader's options dataclass (its metadata's help, and the default)."""
    defaults = options_class()
    for f in fields(options_class):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def _add_prepare(sub) -> None:
    prepare = sub.add_parser("prepare", help="turn a corpus into Parquet shards + manifest (+ vocabulary for text)")
    kinds = prepare.add_subparsers(dest="modality", required=True)
    for modality, (_, _, _, sources) in PREPARERS.items():
        parser = kinds.add_parser(modality, help=sources)
        parser.add_argument("--source", required=True, help=sources)
        parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset prepared differently")
        _add_options_flags(parser, _preparer(modality)[0])


STORAGE_HELP = ("where Ray keeps checkpoints: a URI (s3://bucket/prefix, gs://...) or a folder every node sees; "
                "needed on a multi-node cluster (default: WORKDIR/ray, WORKDIR/tune)")


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model on prepared data with Ray Train, tracked in MLflow")
    train.add_argument("--data", required=True, help="a folder written by `seqlvm prepare`")
    train.add_argument("--model", help="registered model name (see `seqlvm models`; default sentence-vae)")
    train.add_argument("--config", help="YAML file with `model:` and `train:` sections")
    train.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    train.add_argument("--cpus-per-worker", type=float, default=1.0,
                       help="CPUs each worker reserves; also its torch thread count (default 1)")
    train.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    train.add_argument("--experiment", default="seqlvm", help="MLflow experiment name")
    train.add_argument("--name", help="run name; reusing a name resumes that run from its latest checkpoint")
    train.add_argument("--workdir", default="runs", help="local folder for the default MLflow store and Ray storage")
    train.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    train.add_argument("--storage", help=STORAGE_HELP)
    train.add_argument("--no-final-eval", action="store_true", help="skip the test-set evaluation at the end")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.01")


def _add_tune(sub) -> None:
    tune = sub.add_parser("tune", help="hyperparameter sweep: Ray Tune over Ray Train trials, best model registered")
    tune.add_argument("--data", help="a folder written by `seqlvm prepare` (not needed with --resume)")
    tune.add_argument("--model", help="model name (default: the config's model_name, else sentence-vae)")
    tune.add_argument("--config", help="YAML file: `model:`/`train:` as for train, `tune:` with space and min_kl")
    tune.add_argument("--num-samples", type=int, default=8, help="trials in the sweep (default 8)")
    tune.add_argument("--search", default="tpe", choices=["tpe", "gp", "random"],
                      help="Optuna TPE (default), Optuna Gaussian process, or random search")
    tune.add_argument("--scheduler", default="asha", choices=["asha", "none"], help="early stopping (default asha)")
    tune.add_argument("--max-steps", type=int, help="optimiser steps per trial (default: train.max_steps)")
    tune.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    tune.add_argument("--cpus-per-worker", type=float, default=1.0)
    tune.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster's CPUs hold)")
    tune.add_argument("--startup-trials", type=int, help="random trials before the Bayesian model takes over "
                                                          "(default: a quarter of the trials, 2 to 10)")
    tune.add_argument("--min-kl", type=float, help="validation KL (nats) below which a trial is penalised as "
                                                   "collapsed (default: the config's tune.min_kl, else 0)")
    tune.add_argument("--seed", type=int, default=0, help="seed of the search algorithm")
    tune.add_argument("--iw-samples", type=int, default=20,
                      help="importance samples when evaluating the best checkpoint (default 20)")
    tune.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    tune.add_argument("--experiment", default="seqlvm", help="MLflow experiment name")
    tune.add_argument("--name", help="sweep name (default: model and time); --resume continues it")
    tune.add_argument("--workdir", default="runs", help="local folder for the default MLflow store and Ray storage")
    tune.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    tune.add_argument("--storage", help=STORAGE_HELP)
    tune.add_argument("--registered-name", help="registered model (default: MODEL-CORPUS, e.g. sentence-vae-shakespeare)")
    tune.add_argument("--no-register", action="store_true", help="do not register the best checkpoint")
    tune.add_argument("--samples", type=int, default=5, help="prior samples printed (text) or rendered into "
                                                             "WORKDIR/samples (frames) from the registered version")
    tune.add_argument("--resume", action="store_true",
                      help="continue the sweep --name (default: the latest) with its original settings")
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides shared by all trials")


def _add_registry(sub) -> None:
    reg = sub.add_parser("registry", help="the MLflow model registry: list, show, promote, rollback")
    actions = reg.add_subparsers(dest="action", required=True)
    parsers = [actions.add_parser("list", help="registered models with their champion"),
               actions.add_parser("show", help="the versions of a registered model"),
               actions.add_parser("promote", help="point an alias (default champion) at a version"),
               actions.add_parser("rollback", help="move an alias back to the version that held it before")]
    for parser in parsers:
        parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or "
                                                   "runs/mlflow.db)")
        if parser.prog.split()[-1] != "list":
            parser.add_argument("name", help="registered model name")
        if parser.prog.split()[-1] == "promote":
            parser.add_argument("version", help="version number")
        if parser.prog.split()[-1] in ("promote", "rollback"):
            parser.add_argument("--alias", default="champion")


def _add_evaluate_and_sample(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="ELBO, KL, NLL bound, importance-weighted NLL, PPL, active units")
    evaluate.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    evaluate.add_argument("--data", help="prepared data (default: the data the model was trained on)")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--samples", type=int, default=500, help="importance samples per sentence")
    evaluate.add_argument("--chunk", type=int, help="importance samples decoded at once (default: what fits "
                                                    "a 256 MB logits budget)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N sentences")
    evaluate.add_argument("--word-samples", type=int, default=100,
                          help="words datasets: importance samples per word type for the cross-entropies to the "
                               "word distributions (default 100)")
    evaluate.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")

    sample = sub.add_parser("sample", help="text: decode sentences from the prior, posteriors and homotopies; "
                                           "frames: render prior samples as sound, handwriting or piano rolls")
    sample.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    sample.add_argument("--n", type=int, default=5, help="sentences from the prior (each greedy and sampled)")
    sample.add_argument("--sentence", action="append", default=[], help="decode from this sentence's posterior")
    sample.add_argument("--between", nargs=2, metavar=("FIRST", "SECOND"), help="homotopy between two sentences")
    sample.add_argument("--steps", type=int, default=7, help="points on the homotopy")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--max-len", type=int, default=40)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--length", type=int, help="frame models: time steps per sample (default: the training "
                                                   "data's mean length)")
    sample.add_argument("--out", default="runs/samples", help="frame models: folder for the rendered files")
    sample.add_argument("--no-log", action="store_true", help="frame models: do not log the files to the "
                                                              "model's MLflow run")
    sample.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")

    sub.add_parser("models", help="list the registered model names")


def _add_cluster_commands(sub) -> None:
    address_help = "the head's dashboard, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS, else that)"
    submit = sub.add_parser("submit", help="run a seqlvm command on a Ray cluster as a Ray job",
                            usage="seqlvm submit [options] -- seqlvm COMMAND ...")
    submit.add_argument("--address", help=address_help)
    submit.add_argument("--installed", action="store_true",
                        help="ship no code: run the seqlvm installed in the cluster's image (default: ship this one)")
    submit.add_argument("--working-dir", help="a folder to ship as the job's working dir (relative paths in the "
                                              "command then refer to it)")
    submit.add_argument("--tracking-uri", help="MLflow tracking URI as the cluster reaches it (default: the "
                                                "MLFLOW_TRACKING_URI of the cluster's nodes)")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the job (not a secret)")
    submit.add_argument("--submission-id", help="the job's id (default: seqlvm-COMMAND-TIME-RANDOM)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    submit.add_argument("--follow", action="store_true", help="stream its logs until it ends (implies --wait)")
    submit.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="the command, e.g. -- seqlvm tune ...")

    jobs = sub.add_parser("jobs", help="Ray jobs on a cluster: list, status, logs, stop")
    actions = jobs.add_subparsers(dest="action", required=True)
    for action, text in (("list", "jobs with their status"), ("status", "one job's status"),
                         ("logs", "one job's logs"), ("stop", "stop a running job")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--address", help=address_help)
        if action != "list":
            parser.add_argument("job_id", help="the submission id printed by seqlvm submit")
        if action == "status":
            parser.add_argument("--wait", action="store_true", help="wait for the job to end")
        if action == "logs":
            parser.add_argument("--follow", action="store_true", help="stream until the job ends")

    cluster = sub.add_parser("cluster", help="a local multi-process Ray cluster + MLflow server on 127.0.0.1")
    actions = cluster.add_subparsers(dest="action", required=True)
    for action, text in (("up", "start a head node, a worker node and an MLflow server"),
                         ("down", "stop what `up` started"), ("status", "addresses and the environment to use it")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--dir", default="runs/cluster", help="the cluster's state folder (default runs/cluster)")
        if action == "up":
            parser.add_argument("--head-cpus", type=int, default=4, help="logical CPUs of the head node")
            parser.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs of the worker node")
            parser.add_argument("--no-mlflow", action="store_true", help="no MLflow server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_registry(sub)
    _add_evaluate_and_sample(sub)
    _add_cluster_commands(sub)
    return parser


def cmd_prepare(args) -> None:
    options_class, prepare = _preparer(args.modality)
    options = options_class(**{f.name: getattr(args, f.name) for f in fields(options_class)})
    manifest = prepare(args.source, args.out, options, overwrite=args.overwrite, console=console)
    if manifest["modality"] == "text":
        title = f"{args.out}  ({manifest['source']}, vocabulary {manifest['vocab_size']:,})"
        columns = {"sentences": "sentences", "tokens": "tokens", "unknown tokens": "unknown_tokens"}
    else:
        title = f"{args.out}  ({manifest['source']}, {args.modality}, frames of {manifest['frame_dim']})"
        columns = {"sequences": "sequences", "time steps": "steps"}
    table = Table(title=title)
    for column in ("split", *columns, "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, info in manifest["splits"].items():
        table.add_row(split, *[f"{info[key]:,}" for key in columns.values()], str(len(info["shards"])))
    out.print(table)
    if manifest.get("skipped"):
        console.print(f"[yellow]{len(manifest['skipped'])} unreadable files skipped[/] (listed in the manifest)")


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    for key in keys:
        cells = []
        for metrics in rows.values():
            value = metrics.get(key)
            cells.append("" if value is None else (f"{value:,.0f}" if float(value).is_integer() else f"{value:.3f}"))
        table.add_row(key, *cells)
    return table


def cmd_train(args) -> None:
    from seqlvm.training import TrainRequest, run_training

    request = TrainRequest(data_dir=args.data, model_name=args.model, config_file=args.config,
                           overrides=args.overrides, workers=args.workers,
                           cpus_per_worker=args.cpus_per_worker, max_steps=args.max_steps,
                           tracking_uri=args.tracking_uri, experiment=args.experiment, name=args.name,
                           workdir=args.workdir, storage=args.storage, address=args.address,
                           final_eval=not args.no_final_eval)
    result = run_training(request, console=console)
    valid = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("valid/")}
    out.print(metrics_table(f"run {result.run_name}", {"valid": valid, "test": result.test_metrics}))
    out.print(f"checkpoint: {result.checkpoint_dir}")
    out.print(f"MLflow run: runs:/{result.mlflow_run_id}/checkpoint  ({result.tracking_uri})")


def cmd_tune(args) -> None:
    from tune.sweep import SweepRequest, run_sweep

    if not args.resume and not args.data:
        raise SeqlvmError("--data is required (except with --resume)")
    request = SweepRequest(
        data_dir=args.data or "", model_name=args.model, config_file=args.config, overrides=args.overrides,
        num_samples=args.num_samples, search=args.search, scheduler=args.scheduler, max_steps=args.max_steps,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, max_concurrent=args.max_concurrent,
        startup_trials=args.startup_trials, min_kl=args.min_kl, seed=args.seed, iw_samples=args.iw_samples,
        tracking_uri=args.tracking_uri, experiment=args.experiment, name=args.name, workdir=args.workdir,
        storage=args.storage, address=args.address, registered_name=args.registered_name,
        register=not args.no_register)
    result = run_sweep(request, resume=args.resume, console=console)
    out.print(trials_table(result))
    if result.version is None:
        return
    out.print(f"registered [bold]{result.registered_name}[/] version {result.version}: "
              f"models:/{result.registered_name}/{result.version}")
    if result.decision is not None:
        verdict = "is the new champion" if result.decision.promoted else "is not champion"
        out.print(f"version {result.version} {verdict}: {result.decision.reason}")
    out.print(f"MLflow parent run: {result.parent_run_id}  ({result.tracking_uri})")
    if args.samples:
        import torch

        from seqlvm.checkpoint import load_model
        torch.manual_seed(args.seed)
        uri = f"models:/{result.registered_name}/{result.version}"
        model, vocab, payload = load_model(uri, result.tracking_uri)  # read back from the registry
        if vocab is None:
            folder = f"{args.workdir}/samples/{result.registered_name}-{result.version}"
            out.print(rendered_samples(model, payload, args.samples, None, folder, f"samples from {uri}")[0])
        else:
            out.print(prior_table(model, vocab, args.samples, title=f"samples from {uri}"))


def trials_table(result) -> Table:
    table = Table(title=f"sweep {result.name}")
    names = sorted({k for row in result.rows for k in row["params"]})
    for column in ("trial", "outcome", "step", "objective", "valid kl", *[n.split(".", 1)[1] for n in names]):
        table.add_column(column, justify="left" if column in ("trial", "outcome") else "right")
    for row in result.rows:
        best = "*" if result.best and row["trial"] == result.best["trial"] else ""
        cells = [row["trial"] + best, row["outcome"], str(row["step"]), _cell(row["objective"]),
                 _cell(row["valid_kl"]), *[_cell(row["params"].get(n)) for n in names]]
        table.add_row(*cells)
    return table


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def cmd_registry(args) -> None:
    from pathlib import Path

    from seqlvm import registry, tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path("runs").absolute())
    if uri.startswith("sqlite:") and not Path(uri[len("sqlite:///"):]).exists():
        raise SeqlvmError(f"{uri[len('sqlite:///'):]}: no MLflow store here (pass --tracking-uri)")
    tracking.check_reachable(uri)
    client = tracking.client(uri)
    if args.action == "list":
        out.print(rows_table("registered models", registry.list_models(client)))
    elif args.action == "show":
        out.print(rows_table(f"{args.name}", registry.show_model(client, args.name)))
    elif args.action == "promote":
        registry.require_model(client, args.name)
        try:
            registry.set_alias(client, args.name, args.version, args.alias)
        except Exception as exc:  # MLflow raises its own type for an unknown version
            raise SeqlvmError(f"{args.name}: cannot promote version {args.version} "
                              f"({str(exc).splitlines()[0]})") from None
        out.print(f"{args.name}@{args.alias} -> version {args.version}")
    else:
        registry.require_model(client, args.name)
        version = registry.rollback(client, args.name, args.alias)
        out.print(f"{args.name}@{args.alias} -> version {version} (rolled back)")


def rows_table(title: str, rows: list[dict]) -> Table | str:
    if not rows:
        return f"{title}: none"
    table = Table(title=title)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(c, "")) for c in columns])
    return table


def cmd_evaluate(args) -> None:
    from seqlvm.training import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, iw_samples=args.samples,
                                  chunk=args.chunk, limit=args.limit, tracking_uri=args.tracking_uri,
                                  console=console, word_samples=args.word_samples)
    out.print(metrics_table(f"{args.checkpoint} on {args.split}", {args.split: metrics}))


def prior_table(model, vocab, n: int, temperature: float = 1.0, max_len: int = 40, title: str = "") -> Table:
    from seqlvm import generate

    table = Table(title=title or "samples from the prior")
    table.add_column("greedy")
    table.add_column(f"sampled (T={temperature})")
    greedy = generate.from_prior(model, vocab, n, greedy=True, max_len=max_len)
    sampled = generate.from_prior(model, vocab, n, greedy=False, max_len=max_len, temperature=temperature)
    for g, s in zip(greedy, sampled):
        table.add_row(g, s)
    return table


def cmd_sample(args) -> None:
    import torch

    from seqlvm import generate
    from seqlvm.checkpoint import load_model

    torch.manual_seed(args.seed)
    model, vocab, payload = load_model(args.checkpoint, args.tracking_uri)
    if vocab is None:
        sample_frames(args, model, payload)
        return
    out.print(prior_table(model, vocab, args.n, args.temperature, args.max_len))
    if args.sentence:
        table = Table(title="decoded from the posterior")
        for column in ("input", "mean (greedy)", "posterior samples (greedy)"):
            table.add_column(column)
        for sentence, mean, samples in generate.from_posterior(model, vocab, args.sentence, max_len=args.max_len):
            table.add_row(sentence, mean, "\n".join(samples))
        out.print(table)
    if args.between:
        table = Table(title="homotopy")
        table.add_column("t", justify="right")
        table.add_column("greedy decode")
        path = generate.homotopy(model, vocab, *args.between, steps=args.steps, max_len=args.max_len)
        for i, sentence in enumerate(path):
            table.add_row(f"{i / max(1, args.steps - 1):.2f}", sentence)
        out.print(table)


def rendered_samples(model, payload: dict, n: int, length: int | None, folder: str, title: str):
    """Render n prior samples of a frame model into `folder`. Returns (a table of the files, their paths)."""
    from seqlvm.render import render_prior_samples

    paths = render_prior_samples(model, payload["data_info"], n, length, folder)
    table = Table(title=f"{title} ({payload['data_info']['modality']})")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for path in paths:
        table.add_row(str(path), f"{path.stat().st_size:,}")
    return table, paths


def sample_frames(args, model, payload: dict) -> None:
    """Render prior samples of a frame model into files, list them, and log them to the model's MLflow run."""
    from pathlib import Path

    from seqlvm import tracking
    from seqlvm.render import log_samples

    if args.sentence or args.between:
        raise SeqlvmError(f"{args.checkpoint}: --sentence and --between need a text model")
    table, paths = rendered_samples(model, payload, args.n, args.length, args.out,
                                    f"{args.n} samples from the prior of {args.checkpoint}")
    out.print(table)
    run_id = payload.get("mlflow_run_id")
    if args.no_log or not run_id:
        return
    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path("runs").absolute())
    try:
        log_samples(uri, run_id, paths)
    except Exception as exc:  # the files are written either way; say why they are not in MLflow
        console.print(f"[yellow]not logged to MLflow run {run_id}[/]: {str(exc).splitlines()[0]}")
        return
    out.print(f"logged to MLflow run {run_id} under samples/  ({uri})")


def cmd_models(args) -> None:
    from seqlvm.models import MODELS

    for name, cls in sorted(MODELS.items()):
        out.print(f"{name:<14} {(cls.__doc__ or '').strip().splitlines()[0]}")


def cmd_submit(args) -> None:
    from seqlvm import jobs

    command = args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command
    job_id = jobs.submit(command, args.address, not args.installed, args.working_dir, args.tracking_uri, args.env,
                         args.submission_id)
    out.print(f"submitted job {job_id} to {jobs.jobs_address(args.address)}")
    if args.follow or args.wait:
        status = jobs.follow(job_id, args.address) if args.follow else jobs.wait(job_id, args.address)
        finish_job(job_id, status)
    else:
        out.print(f"follow it with: seqlvm jobs logs {job_id} --follow")


def finish_job(job_id: str, status: str) -> None:
    from seqlvm import jobs

    out.print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise jobs.JobFailed(f"job {job_id} ended {status} (its logs: seqlvm jobs logs {job_id})")


def cmd_jobs(args) -> None:
    from seqlvm import jobs

    if args.action == "list":
        rows = [{"job": j.submission_id, "status": str(j.status.value), "command": j.entrypoint[:70],
                 "started": time_of(j.start_time), "ended": time_of(j.end_time)}
                for j in sorted(jobs.call(args.address, "list_jobs"), key=lambda j: j.start_time or 0)
                if j.submission_id]
        out.print(rows_table("jobs", rows))
    elif args.action == "status":
        status = jobs.wait(args.job_id, args.address) if args.wait else None
        info = jobs.call(args.address, "get_job_info", args.job_id)
        out.print(f"job {args.job_id}: {status or info.status.value}"
                  + (f" ({info.message.splitlines()[0]})" if info.message else ""))
        if status is not None:
            finish_job(args.job_id, status)
    elif args.action == "logs":
        if args.follow:
            finish_job(args.job_id, jobs.follow(args.job_id, args.address))
        else:
            sys.stdout.write(jobs.call(args.address, "get_job_logs", args.job_id))
    else:
        stopped = jobs.call(args.address, "stop_job", args.job_id)
        out.print(f"job {args.job_id}: {'stop requested' if stopped else 'was not running'}")


def time_of(milliseconds: int | None) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(milliseconds / 1000)) if milliseconds else ""


def cmd_cluster(args) -> None:
    from pathlib import Path

    from seqlvm import local_cluster

    root = Path(args.dir)
    if args.action == "up":
        state = local_cluster.up(root, args.head_cpus, args.worker_cpus, mlflow=not args.no_mlflow)
    elif args.action == "down":
        state = local_cluster.down(root)
        out.print(f"stopped the local cluster in {state.root} (processes {sorted(state.pids.values())})")
        return
    else:
        state = local_cluster.load(root)
    out.print(f"Ray head {state.gcs_address}, dashboard and Jobs API {state.dashboard_url}, "
              f"MLflow {state.tracking_uri or 'not started'}; logs in {state.root}")
    out.print("use it from a shell with:")
    for key, value in state.client_env().items():
        out.print(f"export {key}={value}")


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "tune": cmd_tune, "registry": cmd_registry,
            "evaluate": cmd_evaluate, "sample": cmd_sample, "models": cmd_models, "submit": cmd_submit,
            "jobs": cmd_jobs, "cluster": cmd_cluster}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SeqlvmError as exc:
        if os.environ.get("SEQLVM_TRACEBACK"):  # for bug reports: the whole chain behind the one line
            import traceback
            traceback.print_exception(exc)
        console.print(f"seqlvm: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("seqlvm: interrupted", markup=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
