"""What each technique against posterior collapse does for the main job's sentence VAE within its budget: the
same model (the sizes of seqlvm/configs/sweep-sentence-vae.yaml) trained for the same steps on the built-in
Shakespeare corpus with techniques added one at a time, then measured on the test split as `seqlvm evaluate`
does: the NLL bound, KL, mutual information, active units, and greedy posterior decodes (distinct share,
unigram F1 against their own input and against other inputs, BLEU-4), plus the different sentences on the
README's homotopy.

    .venv/bin/python benchmarks/latent_use.py              # ~9 min on 2 CPU cores
    .venv/bin/python benchmarks/latent_use.py --short      # the default sweep space's corners at 400 steps
    .venv/bin/python benchmarks/latent_use.py --quick      # smoke run (seconds)
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import DEFAULT_DATA, prepare_shakespeare
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.stream import local_batches
from seqlvm import generate
from seqlvm.evaluation import evaluate
from seqlvm.training.local import train_locally
from seqlvm.training.spec import RunSpec

# The main job's model and batch; each variant adds to the one before, the last is the main job's (at the
# middle of its search space).
BASE = ["model.embedding_dim=128", "model.hidden_dim=192", "model.latent_dim=16", "train.batch_size=64",
        "train.lr=0.002", "train.kl_anneal=sigmoid", "train.kl_anneal_rate=0.02", "train.kl_anneal_midpoint=400",
        "model.word_keep_rate=0.5"]
VARIANTS = {
    "sigmoid annealing + word dropout 0.5 (Bowman)": [],
    "+ bag-of-words loss": ["model.bow_weight=1.0"],
    "+ free bits 0.75": ["model.bow_weight=1.0", "model.free_bits=0.75"],
    "+ z every step, cyclical annealing": ["model.bow_weight=1.0", "model.free_bits=0.75", "model.z_every_step=true",
                                           "train.kl_anneal=cyclical", "train.kl_cycle_steps=500"],
    "+ word dropout 0.2 (the main job)": ["model.bow_weight=1.0", "model.free_bits=0.75", "model.z_every_step=true",
                                          "train.kl_anneal=cyclical", "train.kl_cycle_steps=500",
                                          "model.word_keep_rate=0.2"],
}
# `--short`: 400-step runs at the corners of the sentence VAE's default sweep space (its `sweep_recipe`) and of the
# main job's narrower range, which calibrated both the space and the collapse guard's decode minimums.
SHORT = ["model.bow_weight=1.0", "model.z_every_step=true", "train.kl_anneal=cyclical", "train.kl_cycle_steps=200"]
SHORT_VARIANTS = {
    f"free bits {bits}, keep {keep}, lr {lr}": [*SHORT, f"model.free_bits={bits}", f"model.word_keep_rate={keep}",
                                                f"train.lr={lr}"]
    for bits, keep, lr in ((0.75, 0.2, 0.002), (1.5, 0.2, 0.002), (1.0, 0.2, 0.003), (1.0, 0.3, 0.003),
                           (1.0, 0.3, 0.0035), (1.0, 0.1, 0.004), (1.5, 0.3, 0.004), (1.0, 0.1, 0.0045),
                           (1.0, 0.3, 0.0045), (1.5, 0.1, 0.0045))}
HOMOTOPY = ("good morrow , my lord .", "i will not go with thee .")
COLUMNS = (("nll_bound", "NLL bound", "{:.2f}"), ("kl", "KL", "{:.2f}"), ("mutual_info", "MI", "{:.2f}"),
           ("active_units", "active", "{:.0f}"), ("decode_distinct", "distinct", "{:.2f}"),
           ("decode_f1", "F1", "{:.3f}"), ("decode_f1_shuffled", "F1 shuffled", "{:.3f}"),
           ("decode_bleu", "BLEU-4", "{:.2f}"), ("homotopy", "homotopy", "{:.0f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences evaluated (500 decoded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true", help="20 steps, 100 sentences: checks the script runs")
    parser.add_argument("--short", action="store_true",
                        help="400 steps at the corners of the default sweep space instead of the ablation (~12 min)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.sentences = 20, 100
    elif args.short:
        args.steps = 400
    variants = SHORT_VARIANTS if args.short else VARIANTS
    console = Console(width=160)
    data, _ = prepare_shakespeare(args.data)
    dataset = PreparedDataset.open(data)
    train, test = dataset.read("train"), dataset.read("test", args.sentences)
    rows = {}
    for name, overrides in variants.items():
        spec = RunSpec.build(None, [*BASE, f"train.seed={args.seed}", *overrides], model_name="sentence-vae")
        torch.manual_seed(args.seed)
        model = spec.build_model(dataset.input_size)
        started = time.time()
        train_locally(model, train, spec.train, args.steps)
        torch.manual_seed(args.seed)
        metrics = evaluate(model, local_batches(test, 64, bucket_factor=20), decode_limit=500)
        data = DataDescription.of_dataset(dataset)
        metrics["homotopy"] = len(set(generate.homotopy(model, data, *HOMOTOPY, steps=7)))
        rows[name] = metrics
        console.print(f"{name}: {time.time() - started:.0f}s, distinct {metrics['decode_distinct']:.2f}, "
                      f"F1 {metrics['decode_f1']:.3f} vs {metrics['decode_f1_shuffled']:.3f} shuffled")
    table = Table(title=f"sentence VAE, {args.steps} steps of batch 64: latent use on {len(test):,} test "
                        "sentences (500 decoded)")
    table.add_column("variant")
    for _, label, _ in COLUMNS:
        table.add_column(label, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *[fmt.format(metrics[key]) for key, _, fmt in COLUMNS])
    console.print(table)


if __name__ == "__main__":
    main()
