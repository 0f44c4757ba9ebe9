"""Scoring throughput: sequences/s of `seqlvm score`'s Ray Data scorer with 1 and 2 model replicas (and of the same
scorer in this process) against the single-process path `seqlvm evaluate` took before issue 23
(`seqlvm.evaluation.evaluate` with importance samples, batches of 64 bucketed by length), with torch's default
threads (what `seqlvm evaluate` got) and with one. Same model (the sentence VAE of benchmarks/_common.py, untrained:
the speed does not depend on the weights), same sentences (the first `--limit` of the built-in Shakespeare
corpus's test split), same importance samples.

The Ray runs join a local Ray started before the clock (4 logical CPUs on 2 cores); their time includes starting the
replicas (each imports torch and receives the model), which every job pays. "start-up" is the time of a job of one
row, and "after start-up" the rate without it: an estimate. The three scorer runs must give the same rows
(checked); the old path draws its samples from one stream for the whole batch, so its figure agrees with theirs
only in expectation.

    .venv/bin/python benchmarks/scoring_throughput.py                              # ~6 min on 2 cores
    .venv/bin/python benchmarks/scoring_throughput.py --limit 2534 --samples 500   # the whole split, as evaluate
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import _common  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.dataset import PreparedDataset  # noqa: E402
from pipelines.description import DataDescription  # noqa: E402
from pipelines.stream import local_batches  # noqa: E402
from seqlvm.checkpoint import load_model, save_checkpoint  # noqa: E402
from seqlvm.cluster.ray_runtime import ensure_ray  # noqa: E402
from seqlvm.evaluation import evaluate  # noqa: E402
from seqlvm.models import build_model  # noqa: E402
from seqlvm.scoring import InProcess, OnRay, ScoreJob, scored  # noqa: E402


def old_path(loaded, dataset: PreparedDataset, limit: int, samples: int, threads: int) -> dict:
    """`seqlvm evaluate` before issue 23: the split in memory, batches of 64 bucketed by length, one process."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    sequences = dataset.read("test", limit)
    torch.manual_seed(0)
    metrics = evaluate(loaded.model, local_batches(sequences, 64, bucket_factor=20), iw_samples=samples)
    return {"seconds": time.perf_counter() - started, "rows": len(sequences), "iw_nll": metrics["iw_nll"]}


def scorer(job: ScoreJob, where, startup: bool = True) -> dict:
    """The job scored where `where` says; with `startup`, also the time of a job of one row there (Ray starts its
    replicas for each job)."""
    started = time.perf_counter()
    rows = pa.concat_tables(scored(job, where))
    result = {"seconds": time.perf_counter() - started, "rows": rows.num_rows, "table": rows,
              "iw_nll": -math.fsum(rows["iw_ll"].to_pylist()) / rows.num_rows}
    if startup:
        started = time.perf_counter()
        pa.concat_tables(scored(dataclasses.replace(job, limit=1), where))
        result["startup"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="sentences of the test split scored")
    parser.add_argument("--samples", type=int, default=100, help="importance samples a sentence")
    parser.add_argument("--data", default=str(_common.DEFAULT_DATA), help="where the corpus is (prepared if not)")
    args = parser.parse_args()
    # Ray Data's notes on a pipeline with fewer pieces than replicas (a small --limit)
    warnings.filterwarnings("ignore", category=UserWarning, module="ray.data")
    console = Console(width=140)
    data_dir, _ = _common.prepare_shakespeare(args.data, console=console)
    dataset = PreparedDataset.open(data_dir)
    torch.manual_seed(0)
    model = build_model("sentence-vae", _common.MODEL, dataset.input_size)
    with tempfile.TemporaryDirectory(prefix="seqlvm-score-bench-") as folder:
        loaded = load_model(str(save_checkpoint(folder, model, step=0, config={},
                                                data=DataDescription.of_dataset(dataset).to_dict())))
    job = ScoreJob(loaded, dataset, "test", args.samples, seed=0, limit=args.limit)
    threads = torch.get_num_threads()
    console.print(f"{job.rows} sentences of the test split, {args.samples} importance samples each; "
                  f"torch's default here: {threads} threads; a Ray replica: 1")
    old_path(loaded, dataset, 8, args.samples, threads)  # warm-up: the first calls of a process are slow
    results = {}
    for n in dict.fromkeys((threads, 1)):
        results[f"evaluate before issue 23, {n} thread{'s' if n > 1 else ''}"] = old_path(
            loaded, dataset, args.limit, args.samples, n)
    torch.set_num_threads(1)
    results["scorer in this process, 1 thread"] = scorer(job, InProcess(), startup=False)
    ensure_ray(cpus=4, dashboard=False, logging_level=logging.ERROR)
    for replicas in (1, 2):
        results[f"Ray Data, {replicas} replica{'s' if replicas > 1 else ''}"] = scorer(job, OnRay(replicas))
    tables = [r["table"] for r in results.values() if "table" in r]
    assert all(table.equals(tables[0]) for table in tables), "the scorer's runs disagree"
    report(console, results, next(iter(results)))
    console.print(f"command: .venv/bin/python benchmarks/scoring_throughput.py --limit {args.limit} "
                  f"--samples {args.samples}")


def report(console: Console, results: dict, baseline: str) -> None:
    table = Table(title=f"scoring throughput: sequences/s, against {baseline!r}")
    for column in ("run", "sequences", "seconds", "sequences/s", "ratio", "start-up s", "after start-up /s",
                   "ratio after start-up", "iw_nll"):
        table.add_column(column, justify="left" if column == "run" else "right")
    base = results[baseline]["rows"] / results[baseline]["seconds"]
    for name, r in results.items():
        rate = r["rows"] / r["seconds"]
        startup = r.get("startup")
        steady = None if startup is None or startup >= r["seconds"] else r["rows"] / (r["seconds"] - startup)
        table.add_row(name, str(r["rows"]), f"{r['seconds']:.1f}", f"{rate:.2f}", f"{rate / base:.2f}x",
                      "-" if startup is None else f"{startup:.1f}", "-" if steady is None else f"{steady:.2f}",
                      "-" if steady is None else f"{steady / base:.2f}x", f"{r['iw_nll']:.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
