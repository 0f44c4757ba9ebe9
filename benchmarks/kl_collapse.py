"""KL collapse on real text (Bowman et al., 2016, §3.1): the same sentence VAE trained on the built-in Shakespeare
corpus (a) plainly, with the KL at full weight and no word dropout, and (b) with sigmoid KL-cost annealing and
word dropout. (a)'s KL term should collapse towards 0 (the decoder ignores z); (b)'s should stay clearly above 0.

    .venv/bin/python benchmarks/kl_collapse.py            # full run (~12.5 min on 2 CPU cores)
    .venv/bin/python benchmarks/kl_collapse.py --quick    # smoke run (seconds)
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import DEFAULT_DATA, MODEL, prepare_shakespeare
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from pipelines.stream import local_batches
from seqlvm.evaluation import evaluate
from seqlvm.models import build_model
from seqlvm.training.local import train_locally
from seqlvm.training.spec import TrainConfig

COLLAPSED_BELOW = 0.05  # nats / sentence: (a)'s KL under this counts as collapsed
ALIVE_ABOVE = 0.25  # nats / sentence: (b)'s KL must exceed this, and 10x (a)'s, to count as clearly above 0


def variants(args) -> dict[str, tuple[dict, dict]]:
    """name -> (model overrides, TrainConfig overrides). The sigmoid stays under 0.01 for the first 20% of the
    run (while the decoder learns to use z at all), is 0.5 at 50%, 0.95 at 70% and 0.99 at 80%. An earlier
    midpoint (35%) lets the KL collapse here before the decoder starts relying on z."""
    midpoint = int(0.5 * args.steps)
    rate = 15.0 / args.steps
    return {
        "(a) plain": ({"word_keep_rate": 1.0}, {"kl_anneal": "constant", "kl_weight": 1.0}),
        "(b) anneal + word dropout": ({"word_keep_rate": args.keep_rate},
                                      {"kl_anneal": "sigmoid", "kl_anneal_rate": rate,
                                       "kl_anneal_midpoint": midpoint}),
    }


def run_variant(name: str, model_over: dict, train_over: dict, args, vocab_size: int, train, valid,
                console: Console) -> dict:
    torch.manual_seed(args.seed)  # the same initial weights for both variants
    model = build_model("sentence-vae", {**args.model, **model_over}, vocab_size)
    cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, log_every=args.log_every, seed=args.seed,
                      **train_over)
    started, tag = time.time(), name.split()[0]

    def on_log(step: int, m: dict) -> None:
        console.print(f"{tag} step {step:>5}/{args.steps} | kl weight {m['kl_weight']:.3f} | "
                      f"recon {m['recon']:6.2f} | kl {m['kl']:6.3f} | {time.time() - started:4.0f}s")

    final = train_locally(model, train, cfg, args.steps, on_log)
    torch.manual_seed(args.seed)  # the same reparameterisation/importance samples for both
    metrics = evaluate(model, local_batches(valid, args.batch_size, bucket_factor=20, seed=args.seed),
                       iw_samples=args.iw_samples)
    metrics.update(kl_weight=final["kl_weight"], train_kl=final["kl"], seconds=time.time() - started)
    console.print(f"{tag} done in {metrics['seconds']:.0f}s: {args.split} kl {metrics['kl']:.3f}, "
                  f"iw nll {metrics['iw_nll']:.2f}")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="optimiser steps per variant")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="where builtin:shakespeare is prepared")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-rate", type=float, default=0.5, help="word keep rate of variant (b)")
    parser.add_argument("--iw-samples", type=int, default=10, help="importance samples for the IW NLL")
    parser.add_argument("--split", default="valid", choices=("valid", "test"), help="evaluation split")
    parser.add_argument("--quick", action="store_true", help="tiny model, data and step count (smoke run)")
    args = parser.parse_args()
    args.batch_size, args.lr, args.model, args.log_every = 64, 2e-3, dict(MODEL), 50
    train_limit = valid_limit = None
    if args.quick:
        args.steps, args.iw_samples, args.log_every = min(args.steps, 30), 2, 10
        args.model = {"embedding_dim": 32, "hidden_dim": 32, "latent_dim": 4}
        train_limit, valid_limit = 2000, 200

    console = Console(highlight=False)
    data_dir, vocab = prepare_shakespeare(args.data_dir, console)
    train = PreparedDataset.open(str(data_dir)).read("train", train_limit)
    valid = PreparedDataset.open(str(data_dir)).read(args.split, valid_limit)
    console.print(f"data {data_dir}: {len(train):,} training / {len(valid):,} {args.split} sentences, "
                  f"vocabulary {len(vocab):,}; model {args.model}, batch {args.batch_size}, lr {args.lr}, "
                  f"{args.steps} steps, seed {args.seed}")

    results = {name: run_variant(name, m, t, args, len(vocab), train, valid, console)
               for name, (m, t) in variants(args).items()}

    table = Table(title=f"Sentence VAE on Shakespeare, {args.steps} steps, {args.split} split "
                        f"({len(valid):,} sentences), {args.iw_samples} importance samples")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    rows = [("KL weight at end", "kl_weight", "{:.3f}"), ("ELBO (nats/sent)", "elbo", "{:.2f}"),
            ("recon (nats/sent)", "recon", "{:.2f}"), ("KL (nats/sent)", "kl", "{:.3f}"),
            ("NLL bound (nats/sent)", "nll_bound", "{:.2f}"), ("IW NLL (nats/sent)", "iw_nll", "{:.2f}"),
            ("PPL (bound)", "ppl_bound", "{:.1f}"), ("PPL (IW)", "iw_ppl", "{:.1f}"),
            ("active units", "active_units", "{:d}"), ("train KL, last window", "train_kl", "{:.3f}"),
            ("seconds (train + eval)", "seconds", "{:.0f}")]
    for label, key, fmt in rows:
        table.add_row(label, *(fmt.format(r[key]) for r in results.values()))
    console.print(table)

    kl_a, kl_b = (r["kl"] for r in results.values())
    collapsed, alive = kl_a < COLLAPSED_BELOW, kl_b > max(ALIVE_ABOVE, 10 * kl_a)
    console.print(f"verdict: collapse {'REPRODUCED' if collapsed and alive else 'NOT reproduced'}: "
                  f"KL (a) = {kl_a:.3f} {'<' if collapsed else '>='} {COLLAPSED_BELOW}, KL (b) = {kl_b:.3f} "
                  f"{'>' if alive else '<='} max({ALIVE_ABOVE}, 10 x KL (a)) nats/sentence")


if __name__ == "__main__":
    main()
