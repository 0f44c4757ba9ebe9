"""Training speed of the sentence VAE through `seqlvm train`, this tree against a baseline commit (default: the
loop before the speed-up of issue 14), in one run.

Both sides run the same command a user runs, on the same prepared data: one Ray Train worker holding both cores,
embeddings 300, hidden 256, latent 16, batch 32, the full softmax over a 10k vocabulary. The baseline runs from a
`git worktree` of its commit (its code first on the path of the driver and of Ray's workers). Runs alternate,
baseline then this tree, `--rounds` times, so both see the machine in the same state; each run's figure is the
median of the tokens/s windows its worker logs, the first (start-up) window excluded.

    .venv/bin/python benchmarks/train_speed.py                 # ~6 min on 2 CPU cores
    .venv/bin/python benchmarks/train_speed.py --baseline HEAD~3 --rounds 3 --steps 600
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_DATA, ROOT, prepare_shakespeare
from rich.console import Console
from rich.table import Table

BASELINE = "ea91165"  # main before issue 14: packed encoder, padded softmax, for-each Adam, fp32
SETTINGS = ["model.embedding_dim=300", "model.hidden_dim=256", "model.latent_dim=16", "train.batch_size=32",
            "train.log_every=20", "train.eval_every=1000000"]
WINDOW = re.compile(r"step\s+(\d+) \| epoch .*\|\s+(\d+) tok/s")


def run_training(tree: Path, data: Path, steps: int, workdir: Path) -> list[float]:
    """`seqlvm train` with the code of `tree`; the tokens/s of every logged window after the first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "seqlvm.cli", "train", "--data", str(data), "--cpus-per-worker", "2",
               "--max-steps", str(steps), "--workdir", str(workdir), "--no-final-eval", *SETTINGS]
    found = subprocess.run([sys.executable, "-c", "import seqlvm; print(seqlvm.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(str(tree)):
        raise SystemExit(f"{tree}: python imports seqlvm from {found}, not from this tree")
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: seqlvm train failed:\n{result.stderr[-2000:]}")
    windows = {int(m.group(1)): float(m.group(2)) for m in WINDOW.finditer(result.stdout + result.stderr)}
    if len(windows) < 3:
        raise SystemExit(f"{tree}: fewer than 3 logged windows; raise --steps")
    return [rate for step, rate in sorted(windows.items())][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE})")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating (default 2)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per run (default 400)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="prepared builtin:shakespeare (10k words)")
    args = parser.parse_args()
    console = Console(width=160)
    data, vocab = prepare_shakespeare(args.data)
    console.print(f"data: {data} ({len(vocab):,} words); settings: {' '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="train-speed-") as scratch:
        baseline_tree = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline_tree), args.baseline],
                       check=True, capture_output=True)
        try:
            sides = {f"baseline {args.baseline}": baseline_tree, "this tree": ROOT}
            medians: dict[str, list[float]] = {name: [] for name in sides}
            table = Table(title=f"seqlvm train, {args.steps} steps a run: tokens/s (median of the logged windows)")
            for column in ("round", *sides):
                table.add_column(column, justify="right")
            for round_ in range(1, args.rounds + 1):
                row = [str(round_)]
                for name, tree in sides.items():
                    console.print(f"round {round_}/{args.rounds}: {name} ...")
                    rates = run_training(tree, data, args.steps, Path(scratch) / f"{round_}-{len(row)}")
                    medians[name].append(statistics.median(rates))
                    row.append(f"{medians[name][-1]:,.0f}")
                table.add_row(*row)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)],
                           capture_output=True)
    base, new = (statistics.median(values) for values in medians.values())
    table.add_row("median", f"{base:,.0f}", f"{new:,.0f}")
    console.print(table)
    console.print(f"speed-up: {new / base:.2f}x  (this tree against {args.baseline})")


if __name__ == "__main__":
    main()
