"""Bayesian search (Optuna TPE, optionally GP) against random search at an equal trial budget.

Each search proposes `--trials` configurations from the default search space of `seqlvm tune` (sizes fixed, to
keep trials short), with the same samplers, seeds and objective as the sweep: a sentence VAE trains for
`--steps` steps on the built-in Shakespeare corpus and is scored on the validation split (NLL bound, plus the
collapse penalty when its KL is below `--min-kl`). Trials run in this process with the plain training loop,
so the comparison measures the search algorithms, not Ray's per-trial start-up. Prints, per search and seed,
the best objective reached and the trial that reached it, then the mean over seeds and its ratio to random.

    .venv/bin/python benchmarks/search_comparison.py --trials 10 --seeds 0 1
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from _common import ROOT  # noqa: F401  (puts the project on sys.path)
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from pipelines.stream import local_batches
from pipelines.text import TextOptions, prepare_text
from pipelines.vocab import Vocab
from seqlvm.evaluation import evaluate, sweep_objective
from seqlvm.models import model_class
from seqlvm.training.local import train_locally
from seqlvm.training.spec import RunSpec
from tune.search import default_startup_trials, make_sampler
from tune.space import SpaceSampler, default_space

DATA = ROOT / "benchmarks" / "out" / "shakespeare-2k"
FIXED = ["model.embedding_dim=96", "model.hidden_dim=128", "train.batch_size=64", "train.log_every=1000"]
SLOW_DIMENSIONS = {"model.hidden_dim", "model.embedding_dim"}


def run_search(search: str, seed: int, args, train_data, valid_batches, vocab_size: int, console) -> list[float]:
    """Objectives of the trials in the order the search proposed them."""
    import optuna

    fields = {f.name for f in dataclasses.fields(model_class("sentence-vae").config_class)}
    dims = [d for d in default_space(fields, args.steps) if d.name not in SLOW_DIMENSIONS]
    propose = SpaceSampler(dims)
    study = optuna.create_study(sampler=make_sampler(search, seed, default_startup_trials(args.trials)))
    objectives = []
    for index in range(args.trials):
        trial = study.ask()
        params = propose.propose(trial)
        spec = RunSpec.build(None, FIXED).with_values(params)
        model = spec.build_model(vocab_size)
        train_cfg = dataclasses.replace(spec.train, seed=seed)
        started = time.time()
        train_locally(model, train_data, train_cfg, args.steps)
        torch.manual_seed(seed)  # the sampled z of the bound, so a configuration always scores the same
        metrics = evaluate(model, valid_batches)
        objective = sweep_objective(metrics["nll_bound"], metrics["kl"], args.min_kl)
        study.tell(trial, objective)
        objectives.append(objective)
        console.print(f"{search:>6} seed {seed} trial {index + 1:>2}: objective {objective:8.2f} "
                      f"(bound {metrics['nll_bound']:.2f}, kl {metrics['kl']:.2f}) in {time.time() - started:4.0f}s")
    return objectives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--searches", nargs="+", default=["tpe", "random"], choices=["tpe", "gp", "random"])
    parser.add_argument("--steps", type=int, default=200, help="training steps per trial")
    parser.add_argument("--min-kl", type=float, default=0.0,
                        help="penalise trials whose KL is below this (default 0: the plain bound)")
    parser.add_argument("--valid-sentences", type=int, default=1000)
    args = parser.parse_args()
    console = Console()

    prepare_text("builtin:shakespeare", DATA, TextOptions(vocab_size=2000, max_length=30))
    vocab = Vocab.load(DATA / "vocab.json")
    train_data = PreparedDataset.open(DATA).read("train")
    valid = PreparedDataset.open(DATA).read("valid", args.valid_sentences)
    valid_batches = list(local_batches(valid, 128, bucket_factor=20))

    results: dict[str, dict[int, list[float]]] = {}
    for seed in args.seeds:
        for search in args.searches:
            results.setdefault(search, {})[seed] = run_search(search, seed, args, train_data, valid_batches,
                                                              len(vocab), console)

    table = Table(title=f"best validation objective after {args.trials} trials, {args.steps} steps each "
                        f"(lower is better; min KL {args.min_kl})")
    for column in ("search", *[f"seed {s}: best (trial)" for s in args.seeds], "mean best", "ratio to random"):
        table.add_column(column, justify="left" if column == "search" else "right")
    random_mean = statistics.mean(min(v) for v in results["random"].values()) if "random" in results else None
    for search, by_seed in results.items():
        cells = [f"{min(v):.2f} ({v.index(min(v)) + 1})" for v in by_seed.values()]
        mean = statistics.mean(min(v) for v in by_seed.values())
        ratio = f"{mean / random_mean:.3f}" if random_mean else ""
        table.add_row(search, *cells, f"{mean:.2f}", ratio)
    console.print(table)


if __name__ == "__main__":
    main()
