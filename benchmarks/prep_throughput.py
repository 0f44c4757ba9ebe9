"""Preparation throughput and peak memory: `seqlvm prepare text` in this process (the baseline) and as Ray Data tasks
on a local Ray with 1 and 2 CPUs, on the built-in corpus written as one file of running prose (1x) and that file
repeated N times (default 10x: the form of BooksCorpus, a few very large text files read in byte ranges).

Large files are read in byte ranges of 4 MiB, sized for corpora of gigabytes; the built-in corpus is 5 MB, so
the benchmark reads ranges of `--range-kb` (1 MiB) to run the corpora in the regime of a real one, more ranges
than CPUs (the 1x corpus in 5 tasks a pass, the 10x one in 43). Each configuration prepares every corpus in turn
on one Ray instance, after a warm-up preparation that starts its workers; a thread samples every 0.2 s the
resident memory of the driver and of each Ray worker process, and the object store's use. Printed: seconds,
sentences/s, peaks, the ratios (2 CPUs against 1 on the largest corpus; each corpus against 1x for each peak),
and, from the measured rate per CPU, the time the card's 80M sentences would take on 32 and 256 CPUs: an
extrapolation, not a measurement.

    .venv/bin/python benchmarks/prep_throughput.py                   # ~3 min on 2 cores
    .venv/bin/python benchmarks/prep_throughput.py --factors 10 20   # does the object store level off?
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import _common  # noqa: E402, F401  (puts the repository on sys.path)
import ray  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from _memory import Sampler  # noqa: E402

from pipelines import text_sources  # noqa: E402
from pipelines.text import TextOptions, prepare_text  # noqa: E402
from pipelines.text_sources import play_speeches, shakespeare_files  # noqa: E402
from seqlvm.cluster.ray_runtime import ensure_ray  # noqa: E402
from pipelines.work import InProcess, OnRay  # noqa: E402

MB = 2**20
CARD_SENTENCES = 80_000_000


def write_corpora(folder: Path, factors: list[int]) -> dict[str, Path]:
    """The built-in corpus as one file of running prose (1x), and repeated `factor` times for each factor."""
    text = "\n\n".join(speech for play in shakespeare_files() for speech in play_speeches(play.read_text("utf-8")))
    corpora = {}
    for factor in [1, *factors]:
        corpora[f"{factor}x"] = folder / f"plays-{factor}x.txt"
        with corpora[f"{factor}x"].open("w") as out:
            for _ in range(factor):
                out.write(text + "\n\n")
    return corpora


def timed_prepare(source: Path, out: Path, work) -> dict:
    sampler = Sampler()
    sampler.start()
    started = time.perf_counter()
    manifest = prepare_text(str(source), out, TextOptions(layout="prose"), work=work)
    seconds = time.perf_counter() - started
    peaks = sampler.finish()
    sentences = sum(split["sequences"] for split in manifest["splits"].values())
    return {"seconds": seconds, "sentences": sentences, "rate": sentences / seconds, "packs": manifest["packs"],
            **peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[10], help="the larger corpora, as multiples of 1x")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--range-kb", type=int, default=1024, help="the size of the byte ranges read as tasks")
    args = parser.parse_args()
    text_sources.RANGE_BYTES = args.range_kb * 1024
    console = Console(width=140)
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="seqlvm-prep-bench-") as tmp:
        folder = Path(tmp)
        corpora = write_corpora(folder, args.factors)
        runs = [("in process", None)] + [(f"Ray, {n} CPU{'s' if n > 1 else ''}", n) for n in args.cpus]
        for name, cpus in runs:
            work = InProcess()
            if cpus is not None:
                ensure_ray(cpus=cpus, dashboard=False, logging_level=logging.ERROR)
                work = OnRay()
                prepare_text(str(corpora["1x"]), folder / "warm-up", TextOptions(layout="prose"), work=work)
            for size, source in corpora.items():
                results[name, size] = timed_prepare(source, folder / f"{name}-{size}", work)
                console.print(f"{name}, {size}: {results[name, size]['seconds']:.1f} s")
            if cpus is not None:
                ray.shutdown()
    report(console, results, runs, list(corpora))


def report(console: Console, results: dict, runs: list, sizes: list[str]) -> None:
    table = Table(title="seqlvm prepare text: throughput and peak memory")
    for column in ("run", "corpus", "packs", "sentences", "seconds", "sentences/s", "driver MB", "worker MB",
                   "object store MB"):
        table.add_column(column, justify="left" if column in ("run", "corpus") else "right")
    for (name, size), r in results.items():
        store = "-" if r["store"] is None else f"{r['store'] / MB:.1f}"
        table.add_row(name, size, str(r["packs"]), f"{r['sentences']:,}", f"{r['seconds']:.1f}", f"{r['rate']:,.0f}",
                      f"{r['driver'] / MB:.0f}", f"{r['worker'] / MB:.0f}", store)
    console.print(table)
    small, largest = sizes[0], sizes[-1]
    ratios = Table(title=f"ratios: each corpus against {small}, and the rate against 1 CPU on {largest}")
    ratios.add_column("run")
    ratios.add_column("rate vs 1 CPU", justify="right")
    for size in sizes[1:]:
        for peak in ("driver", "worker", "store"):
            ratios.add_column(f"{peak} {size}/{small}", justify="right")
    one_cpu = results.get((runs[1][0], largest)) if len(runs) > 1 else None
    for name, cpus in runs:
        row = [name, f"{results[name, largest]['rate'] / one_cpu['rate']:.2f}x" if one_cpu and cpus else "-"]
        base = results[name, small]
        for size in sizes[1:]:
            for peak in ("driver", "worker", "store"):
                big = results[name, size][peak]
                row.append(f"{big / base[peak]:.2f}" if big and base[peak] else "-")
        ratios.add_row(*row)
    console.print(ratios)
    most = max((cpus for _, cpus in runs if cpus), default=None)
    if most:
        per_cpu = results[f"Ray, {most} CPU{'s' if most > 1 else ''}", largest]["rate"] / most
        console.print(f"extrapolation from {per_cpu:,.0f} sentences/s per CPU (measured with {most} CPUs on the "
                      f"{largest} corpus), if the rate per CPU held: {CARD_SENTENCES / 1e6:.0f}M sentences take "
                      + ", ".join(f"{CARD_SENTENCES / (per_cpu * n) / 60:.1f} min on {n} CPUs" for n in (32, 256)))


if __name__ == "__main__":
    main()
