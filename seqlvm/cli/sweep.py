"""`seqlvm tune`: the only part of seqlvm that imports the sweeps (`tune/`)."""
from __future__ import annotations

from rich.table import Table

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import cell, console, fitted_table, out, percent
from seqlvm.cli.sample import prior_table, rendered_samples
from seqlvm.cli.train import add_placement_flags
from tune.search import SCHEDULERS, SEARCHES


def add_parsers(sub) -> None:
    tune = sub.add_parser("tune", help="hyperparameter sweep: Ray Tune over Ray Train trials, best model registered")
    tune.add_argument("--data", help="a folder written by `seqlvm prepare` (not needed with --resume)")
    tune.add_argument("--model", help="model name (default: the config's model_name, else sentence-vae for text "
                                      "and vrnn for frames)")
    tune.add_argument("--config", help="YAML file: `model:`/`train:` as for train, `tune:` with space and the "
                                      "collapse guard's minimums")
    tune.add_argument("--num-samples", type=int, default=8, help="trials in the sweep (default 8)")
    tune.add_argument("--search", default="tpe", choices=SEARCHES,
                      help="Optuna TPE (default), Optuna Gaussian process, or random search")
    tune.add_argument("--scheduler", default="asha", choices=SCHEDULERS, help="early stopping (default asha)")
    tune.add_argument("--max-steps", type=int, help="optimiser steps per trial (default: train.max_steps)")
    tune.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    tune.add_argument("--cpus-per-worker", type=float, default=1.0)
    tune.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster's CPUs hold)")
    tune.add_argument("--startup-trials", type=int, help="random trials before the Bayesian model takes over "
                                                          "(default: a quarter of the trials, 2 to 10)")
    guard = tune.add_argument_group("collapse guard", "a trial under any minimum is penalised and never becomes "
                                                      "champion (default: the config's tune: values, else the "
                                                      "model's defaults; docs/sweeps-and-registry.md)")
    guard.add_argument("--min-mutual-info", type=float, help="validation I(x; z) in nats (global latents; default 0.5)")
    guard.add_argument("--min-active-units", type=int, help="validation active units (global latents; default 1)")
    guard.add_argument("--min-decode-distinct", type=float,
                       help="share of distinct greedy decodes of validation sentences' posterior means (sentence "
                            "latents over words; default 0.3)")
    guard.add_argument("--min-decode-f1-gain", type=float,
                       help="unigram F1 of those decodes against their own sentence minus against another "
                            "(sentence latents over words; default 0.05)")
    guard.add_argument("--min-kl", type=float, help="validation KL in nats (default 0.1 for latents per step)")
    guard.add_argument("--allow-collapsed", action="store_true", help="no guard: any trial may win")
    tune.add_argument("--seed", type=int, default=0, help="seed of the search algorithm")
    tune.add_argument("--iw-samples", type=int, default=20,
                      help="importance samples when evaluating the best checkpoint (default 20)")
    add_placement_flags(tune, name_help="sweep name (default: model and time); --resume continues it")
    tune.add_argument("--registered-name",
                      help="registered model (default: MODEL-CORPUS, e.g. sentence-vae-shakespeare)")
    tune.add_argument("--no-register", action="store_true", help="do not register the best checkpoint")
    tune.add_argument("--samples", type=int, default=5, help="prior samples printed (text) or rendered into "
                                                             "WORKDIR/samples (frames) from the registered version")
    tune.add_argument("--resume", action="store_true",
                      help="continue the sweep --name (default: the latest) with its original settings")
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides shared by all trials")


def cmd_tune(args) -> None:
    from tune.request import SweepRequest
    from tune.sweep import run_sweep

    if not args.resume and not args.data:
        raise SeqlvmError("--data is required (except with --resume)")
    request = SweepRequest(
        data_dir=args.data or "", model_name=args.model, config_file=args.config, overrides=args.overrides,
        num_samples=args.num_samples, search=args.search, scheduler=args.scheduler, max_steps=args.max_steps,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, max_concurrent=args.max_concurrent,
        startup_trials=args.startup_trials, min_kl=args.min_kl, min_mutual_info=args.min_mutual_info,
        min_active_units=args.min_active_units, min_decode_distinct=args.min_decode_distinct,
        min_decode_f1_gain=args.min_decode_f1_gain, allow_collapsed=args.allow_collapsed, seed=args.seed,
        iw_samples=args.iw_samples,
        tracking_uri=args.tracking_uri, experiment=args.experiment, name=args.name, workdir=args.workdir,
        storage=args.storage, address=args.address, registered_name=args.registered_name,
        register=not args.no_register, quiet=not args.verbose)
    result = run_sweep(request, resume=args.resume, console=console)
    out.print(trials_table(result))
    if result.version is None:
        return
    out.print(f"registered [bold]{result.registered_name}[/] version {result.version}: "
              f"models:/{result.registered_name}/{result.version}")
    if result.decision is not None:
        verdict = "is the new champion" if result.decision.promoted else "is not champion"
        out.print(f"version {result.version} {verdict}: {result.decision.reason}")
    if result.test_metrics and "mutual_info" in result.test_metrics:
        out.print(latent_use_table(result.test_metrics, f"does version {result.version} use its latent? "
                                                        "(test split)"))
    out.print(f"MLflow parent run: {result.parent_run_id}  ({result.tracking_uri})")
    if args.samples:
        import torch

        from seqlvm.checkpoint import load_model
        torch.manual_seed(args.seed)
        uri = f"models:/{result.registered_name}/{result.version}"
        loaded = load_model(uri, result.tracking_uri)  # read back from the registry
        if not loaded.is_text:
            folder = f"{args.workdir}/samples/{result.registered_name}-{result.version}"
            out.print(rendered_samples(loaded, args.samples, None, folder, f"samples from {uri}")[0])
        else:
            out.print(prior_table(loaded.model, loaded.data, args.samples, title=f"samples from {uri}"))


LATENT_USE_ROWS = (
    ("mutual_info", "mutual information I(x; z), nats"), ("active_units", "active units"),
    ("decode_distinct", "distinct posterior decodes (share)"), ("decode_f1", "unigram F1, decode vs its input"),
    ("decode_f1_shuffled", "unigram F1, decode vs another input"), ("decode_bleu", "BLEU-4, decode vs its input"))


def latent_use_table(metrics: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in LATENT_USE_ROWS:
        if key in metrics:
            table.add_row(label, cell(metrics[key]))
    return table


def trials_table(result):
    """The trials, with the values the search varied (a value every trial shared is not shown), fitted to
    TABLE_WIDTH columns: one row per trial, or one column per trial when that is too wide."""
    varied = [name for name in sorted({k for row in result.rows for k in row["params"]})
              if len({repr(row["params"].get(name)) for row in result.rows}) > 1]
    headers = ["trial", "outcome", "step", "valid bound", "KL", "MI", "distinct", "collapse guard",
               *[name.split(".", 1)[1] for name in varied]]
    rows = []
    for row in result.rows:
        best = "*" if result.best and row["trial"] == result.best["trial"] else ""
        rows.append([row["trial"] + best, row["outcome"], str(row["step"]), cell(row["valid_nll_bound"]),
                     cell(row["valid_kl"]), cell(row["valid_mutual_info"]), percent(row.get("valid_decode_distinct")),
                     "rejected" if row["collapsed"] else ("ok" if row["objective"] is not None else ""),
                     *[cell(row["params"].get(name)) for name in varied]])
    return fitted_table(f"sweep {result.name} (* the best)", headers, rows)


COMMANDS = {"tune": cmd_tune}
