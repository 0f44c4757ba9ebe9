"""Table 1 of Schmidt & Hofmann (2018) on the words task: the deep state-space model (DSSM) with TRIL flows trained
on the plain ELBO (K=1) and with importance-weighted resampling (K=10), the 2xTRIL K=10 model, and the GRU
language-model baseline (BASELINE-8D), all with a state of 8 and no KL annealing. Printed beside the paper's
numbers: cross-entropy of the model's word distribution P^ to the train and test word distributions (nats), the
shares of sampled words in the training vocabulary (all and distinct), and the mean mutual information between
the noise and the emitted character (Eq. 13). Data: benchmarks/words_data.py's wordfreq stand-in for BooksCorpus.

    .venv/bin/python benchmarks/dssm_words.py            # full run (5 min on 2 idle CPU cores, ~10 when shared)
    .venv/bin/python benchmarks/dssm_words.py --quick    # smoke run (15-45 s)
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from pipelines.words import SOURCE, WordOptions, prepare_words
from seqlvm.models import build_model
from seqlvm.training.local import train_locally
from seqlvm.training.spec import TrainConfig
from seqlvm.word_metrics import oracle_train_metrics, word_task_metrics

OUT = ROOT / "benchmarks" / "out"
STATE = 8  # d = 8, the paper's state (and the baseline's embedding and GRU) size
TRIL = {"generative_flow": "tril", "inference_flow": "tril"}
VARIANTS = {  # --variants key -> (Table 1 name, registry name, model config)
    "tril": ("TRIL", "dssm", {**TRIL, "importance_samples": 1}),
    "tril-k10": ("TRIL, K=10", "dssm", {**TRIL, "importance_samples": 10}),
    "2xtril-k10": ("2xTRIL, K=10", "dssm",
                   {"generative_flow": "2xtril", "inference_flow": "2xtril", "importance_samples": 10}),
    "gru": ("BASELINE-8D", "rnnlm", {"embedding_dim": STATE, "hidden_dim": STATE, "word_keep_rate": 1.0,
                                     "cell": "gru"}),
}
# Table 1 (means over 5 or 10 runs); ORACLE-TRAIN samples the training words.
PAPER = {
    "TRIL": (12.13, 11.99, 0.18, 0.43, 0.95),
    "TRIL, K=10": (11.43, 11.47, 0.16, 0.49, 1.12),
    "2xTRIL, K=10": (11.33, 11.38, 0.16, 0.49, 1.28),
    "BASELINE-8D": (12.92, 12.97, 0.13, 0.53, None),
    "ORACLE-TRAIN": (7.0, 7.02, 0.27, 1.0, None),
}
COLUMNS = {"xent_train": "H[P_train, P^]", "xent_test": "H[P_test, P^]", "in_vocab_unique": "w in V unique",
           "in_vocab": "w in V", "mutual_information": "mean I(t)"}


def train(key: str, data_dir, args, console: Console):
    name, registry_name, config = VARIANTS[key]
    torch.manual_seed(args.seed)
    model = build_model(registry_name, config, args.vocab_size)
    cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, log_every=max(1, args.steps // 5), seed=args.seed,
                      kl_anneal="constant", kl_weight=1.0)
    started = time.time()

    def on_log(step: int, m: dict) -> None:
        console.print(f"{name:<13} step {step:>5}/{args.steps} | nll bound/word {m['nll_bound']:6.3f} | "
                      f"kl {m['kl']:6.3f} | {time.time() - started:4.0f}s")

    train_locally(model, PreparedDataset.open(str(data_dir)).read("train"), cfg, args.steps, on_log)
    return model, time.time() - started


def evaluate(model, data_dir, args) -> dict:
    """Table 1's metrics. A K-particle DSSM spends K particles on each of its importance samples, so every model
    gets the same particle budget per word."""
    particles = getattr(model.config, "importance_samples", 1)
    mi = {"num_prefixes": args.mi_prefixes, "num_noise": args.mi_noise, "max_len": args.max_length + 1}
    started = time.time()
    dataset = PreparedDataset.open(data_dir)
    metrics = word_task_metrics(model, dataset, num_samples=max(1, args.particle_budget // particles),
                                num_generated=args.generated, greedy=False, mi_options=mi)
    return {**metrics, "eval_seconds": time.time() - started}


def cell(value: float | None, paper: float | None) -> str:
    ours = "-" if value is None else f"{value:.2f}"
    return ours + ("" if paper is None else f" ({paper:.2f})")


def results_table(results: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for heading in COLUMNS.values():
        table.add_column(heading, justify="right")
    table.add_column("train s", justify="right")
    table.add_column("eval s", justify="right")
    for name, metrics in results.items():
        paper = PAPER.get(name, (None,) * len(COLUMNS))
        cells = [cell(metrics.get(key), value) for key, value in zip(COLUMNS, paper)]
        timing = [f"{metrics[key]:.0f}" if key in metrics else "" for key in ("train_seconds", "eval_seconds")]
        table.add_row(name, *cells, *timing)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, few steps (smoke run)")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        + ", ".join(f"{key} ({name})" for key, (name, _, _) in VARIANTS.items()))
    parser.add_argument("--particle-budget", type=int, default=50,
                        help="particles per word for log P^(w): importance samples x K")
    parser.add_argument("--generated", type=int, default=10000, help="sampled words for the in-vocabulary shares")
    parser.add_argument("--mi-prefixes", type=int, default=1000, help="prefix states h_{t-1} for I(t)")
    parser.add_argument("--mi-noise", type=int, default=100, help="noise draws xi_t per prefix for I(t)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads: these models are tiny, and a second thread on a loaded 2-core machine "
                             "slows them down")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = WordOptions()  # words_data.py's defaults: the 20K most frequent words, 250K tokens
    if args.quick:
        args.steps, args.particle_budget, args.generated, args.mi_prefixes, args.mi_noise = 60, 10, 1000, 100, 20
        options = WordOptions(vocab_size=2000, corpus_tokens=20000)
    keys = [key.strip() for key in args.variants.split(",")]
    unknown = [key for key in keys if key not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")

    console = Console(width=140, highlight=False)
    data_dir = OUT / f"words-word{'-quick' if args.quick else ''}"
    manifest = prepare_words(SOURCE, data_dir, options, console=console)
    args.vocab_size, args.max_length = manifest["vocab_size"], options.max_length
    console.print(f"data {data_dir}: {manifest['word_types']:,} word types, "
                  f"{manifest['splits']['train']['sequences']:,} training words, H[P_train] "
                  f"{manifest['entropy_nats']['train']:.2f} nats (paper: 143K types, H[P_test] 6.80); "
                  f"{args.steps} steps of batch {args.batch_size}, lr {args.lr}, seed {args.seed}")

    results = {"ORACLE-TRAIN": oracle_train_metrics(data_dir, args.generated, seed=args.seed)}
    for key in keys:
        name = VARIANTS[key][0]
        model, seconds = train(key, data_dir, args, console)
        results[name] = {**evaluate(model, data_dir, args), "train_seconds": seconds}
        console.print(f"{name}: " + ", ".join(f"{COLUMNS[k]} {results[name][k]:.3f}"
                                             for k in COLUMNS if k in results[name]))
    console.print(results_table(results, f"Words task, standard split: ours (paper, Table 1); one run per model, "
                                         f"{args.steps} steps; cross-entropies in nats"))
    console.print(f"log P^(w) from {args.particle_budget} particles per word (importance samples x K); "
                  f"{args.generated:,} sampled words; I(t) in nats averaged over t = 1..{args.max_length + 1} "
                  f"from {args.mi_prefixes} prefixes x {args.mi_noise} noise draws. Our {manifest['word_types']:,}-word "
                  "vocabulary has a lower entropy than the paper's 143K (compare the ORACLE-TRAIN rows).")


if __name__ == "__main__":
    main()
