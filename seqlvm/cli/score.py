"""`seqlvm score`: every sequence of a split scored by a model (ELBO and importance-weighted log-likelihood, one
row each, with its position in the split) into a Parquet file, in this process or as a Ray Data pipeline of model
replicas. The flags that place the scoring are shared with `seqlvm evaluate`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.table import Table

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import console, out

CHECKPOINT_HELP = "checkpoint folder, training-run folder, runs:/ or models:/ URI"
LOG_DIR = "runs/logs"


def add_scoring_flags(parser) -> None:
    """Where the scoring runs: this process without any of these; with one, a Ray Data pipeline."""
    parser.add_argument("--replicas", type=int, help="model replicas scoring at once, as Ray Data actors (one GPU "
                                                     "each when the cluster has GPUs, else one CPU; default 1)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", help="score on the Ray cluster at this address (HOST:PORT of its GCS, or auto)")
    where.add_argument("--cpus", type=int, help="score on a local Ray with this many CPUs")
    parser.add_argument("--verbose", action="store_true",
                        help=f"show Ray's output here (default: into {LOG_DIR}/COMMAND-TIME.log, its path printed)")


def add_parsers(sub) -> None:
    score = sub.add_parser("score", help="score every sequence of a split (ELBO, importance-weighted log-likelihood) "
                                         "into Parquet, one row a sequence")
    score.add_argument("model", help=CHECKPOINT_HELP)
    score.add_argument("--data", required=True, help="prepared data like the model's training data")
    score.add_argument("--split", default="test", choices=["train", "valid", "test"])
    score.add_argument("--samples", type=int, default=500, help="importance samples per sequence (default 500)")
    score.add_argument("--seed", type=int, default=0, help="each sequence's samples are drawn from (seed, its row)")
    score.add_argument("--batch-size", type=int, help="rows a replica scores at a time; the scores do not depend on "
                                                      "it (default 16)")
    score.add_argument("--limit", type=int, help="score only the first N sequences of the split")
    score.add_argument("--out", required=True, help="the Parquet file to write (a path or a URI: s3://, gs://...), "
                                                 "written whole or not at all")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_scoring_flags(score)
    score.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")


def check_count(flag: str, value: int | None, low: int = 1) -> None:
    if value is not None and value < low:
        raise SeqlvmError(f"{flag} {value}: give at least {low}")


def scoring_placement(args):
    """Where scoring runs: this process, or Ray Data actors when --replicas, --address or --cpus says so (Ray is
    started at the first job, once the input has been checked)."""
    from seqlvm.scoring import InProcess, OnRay

    check_count("--replicas", args.replicas)
    check_count("--cpus", args.cpus)
    if args.address is None and args.cpus is None and args.replicas is None:
        return InProcess()
    replicas = args.replicas or 1
    if args.cpus is not None and replicas > args.cpus:
        raise SeqlvmError(f"--replicas {replicas}: a local Ray with --cpus {args.cpus} holds at most {args.cpus}")
    if args.address:
        from seqlvm.cluster.ray_runtime import check_address
        check_address(args.address)

    def start():
        from seqlvm import run_log
        from seqlvm.cluster.ray_runtime import ensure_ray

        if not args.verbose:  # Ray Data's actors and Ray's core log lines, which logging levels do not reach
            log = Path(LOG_DIR) / f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            run_log.divert(log)
            console.print(f"Ray's output: {log} (--verbose shows it here)")
        ensure_ray(worker_cpus=replicas, address=args.address, dashboard=False, cpus=args.cpus,
                   logging_level=logging.ERROR)
    return OnRay(replicas, start)


def cmd_score(args) -> None:
    from pipelines.dataset import PreparedDataset
    from seqlvm.checkpoint import load_model
    from seqlvm.scoring import BATCH_ROWS, ScoreJob, check_out, write_scores
    from seqlvm.training.evaluate import check_same_kind_of_data

    for flag, value, low in (("--samples", args.samples, 1), ("--batch-size", args.batch_size, 1),
                             ("--limit", args.limit, 1), ("--seed", args.seed, 0)):
        check_count(flag, value, low)
    where = scoring_placement(args)
    dataset = PreparedDataset.open(args.data)
    check_out(args.out, args.overwrite, dataset.location)
    loaded = load_model(args.model, args.tracking_uri)
    check_same_kind_of_data(loaded.data, dataset)
    job = ScoreJob(loaded, dataset, args.split, args.samples, args.seed, args.batch_size or BATCH_ROWS, args.limit)
    if not job.rows:
        raise SeqlvmError(f"{args.data}: split {args.split!r} holds no sequences")
    started = time.perf_counter()
    description = write_scores(job, args.out, where, args.overwrite, console, model=args.model)
    out.print(summary(args, description, time.perf_counter() - started))


def summary(args, description: dict, seconds: float) -> Table:
    table = Table(title=f"{args.model} on {args.split}: {description['rows']:,} sequences scored",
                  show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, value in (("written to", args.out),
                        ("importance samples", f"{args.samples} a sequence, seed {args.seed}"),
                        ("time", f"{seconds:.1f} s, {description['rows'] / max(seconds, 1e-9):,.1f} sequences/s")):
        table.add_row(name, value)
    return table


COMMANDS = {"score": cmd_score}
