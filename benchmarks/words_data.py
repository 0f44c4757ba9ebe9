"""The data and metrics of the word-generation task (Schmidt & Hofmann 2018, Section 5.1, Tables 1-2) on the wordfreq
stand-in for BooksCorpus: both splits are prepared, and their statistics, the ORACLE-TRAIN row (the training
distribution itself as the model) and a GRU language-model baseline (BASELINE-8D: embedding and state of 8, teacher
forcing) are printed beside the paper's numbers. Cross-entropies in nats (see seqlvm/word_metrics.py).

    .venv/bin/python benchmarks/words_data.py            # full run (5 min of CPU time; 12.5 min wall on 2 busy cores)
    .venv/bin/python benchmarks/words_data.py --quick    # smoke run (~1.5 min)
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
# Table 1 (standard split) and Table 2 (vocabulary split); the test entropy is footnote 7.
PAPER = {
    ("word", "ORACLE-TRAIN"): {"xent_train": 7.0, "xent_test": 7.02, "in_vocab_unique": 0.27, "in_vocab": 1.0},
    ("word", "BASELINE-8D"): {"xent_train": 12.92, "xent_test": 12.97, "in_vocab_unique": 0.13, "in_vocab": 0.53},
    ("vocab", "BASELINE-8D"): {"xent_train": 12.90, "xent_test": 13.67},
}
PAPER_DATA = {"word types": "143K", "H[P_test] (nats)": "6.80"}
COLUMNS = {"xent_train": "H[P_train, P^]", "xent_test": "H[P_test, P^]", "in_vocab_unique": "w in V unique",
           "in_vocab": "w in V", "mass_on_words": "P^ mass on words"}


def prepare(split: str, args, console: Console):
    out = OUT / f"words-{split}{'-quick' if args.quick else ''}"
    options = WordOptions(vocab_size=args.vocab_size, corpus_tokens=args.corpus_tokens, split=split)
    return out, prepare_words(SOURCE, out, options, console=console)


def train_baseline(data_dir, args, console: Console):
    torch.manual_seed(0)
    model = build_model("rnnlm", {"embedding_dim": 8, "hidden_dim": 8, "word_keep_rate": 1.0, "cell": "gru"}, 30)
    cfg = TrainConfig(batch_size=args.batch_size, lr=3e-3, log_every=max(1, args.steps // 5), kl_anneal="constant")
    started = time.time()

    def on_log(step: int, m: dict) -> None:
        console.print(f"GRU LM step {step:>5}/{args.steps} | nll/word {m['nll_bound']:.3f} | "
                      f"{time.time() - started:4.0f}s")

    train_locally(model, PreparedDataset.open(data_dir).read("train"), cfg, args.steps, on_log)
    return model


def data_table(manifests: dict) -> Table:
    table = Table(title="Words data (wordfreq 'large' English list)")
    table.add_column("statistic")
    for split in manifests:
        table.add_column(f"{split} split", justify="right")
    table.add_column("paper", justify="right")
    rows = {"word types": lambda m: f"{m['word_types']:,}", "test-only types": lambda m: f"{m['test_only_types']:,}",
            **{f"{s} rows": (lambda m, s=s: f"{m['splits'][s]['sequences']:,}") for s in ("train", "valid", "test")},
            "H[P_train] (nats)": lambda m: f"{m['entropy_nats']['train']:.2f}",
            "H[P_test] (nats)": lambda m: f"{m['entropy_nats']['test']:.2f}"}
    for name, cell in rows.items():
        table.add_row(name, *[cell(m) for m in manifests.values()], PAPER_DATA.get(name, ""))
    return table


def metrics_table(results: dict) -> Table:
    table = Table(title="Word-generation metrics: ours (paper)")
    table.add_column("split")
    table.add_column("model")
    for title in COLUMNS.values():
        table.add_column(title, justify="right")
    for (split, model), metrics in results.items():
        paper = PAPER.get((split, model), {})
        cells = [f"{metrics[key]:.2f}" + (f" ({paper[key]:.2f})" if key in paper else "") for key in COLUMNS]
        table.add_row(split, model, *cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data and a short run")
    parser.add_argument("--steps", type=int, default=1500, help="GRU LM training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=20000)
    parser.add_argument("--corpus-tokens", type=int, default=250000)
    parser.add_argument("--generated", type=int, default=10000, help="sampled words for the in-vocabulary shares")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.vocab_size, args.corpus_tokens, args.generated = 300, 2000, 20000, 2000
    console = Console(width=130)
    prepared = {split: prepare(split, args, console) for split in ("word", "vocab")}
    console.print(data_table({split: manifest for split, (_, manifest) in prepared.items()}))
    results = {}
    for split, (data_dir, _) in prepared.items():
        results[(split, "ORACLE-TRAIN")] = oracle_train_metrics(data_dir, args.generated)
        model = train_baseline(data_dir, args, console)
        results[(split, "BASELINE-8D")] = word_task_metrics(model, PreparedDataset.open(data_dir),
                                                            num_generated=args.generated)
    console.print(metrics_table(results))
    console.print("Our vocabulary is smaller than the paper's (see 'word types'), which lowers every cross-entropy "
                  "and raises the in-vocabulary shares; the oracle rows calibrate the comparison.")


if __name__ == "__main__":
    main()
