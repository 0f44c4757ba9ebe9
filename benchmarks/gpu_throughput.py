"""Training throughput of the sentence VAE on a GPU: fp32 against bf16 and fp16 autocast, and against the CPU,
with the same step functions the Ray Train loop uses. Prints tokens/sec and ratios to the fp32 GPU run.

    python benchmarks/gpu_throughput.py --data-dir DATA [--steps 300] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from seqlvm.models import build_model
from seqlvm.training.local import train_locally
from seqlvm.training.spec import TrainConfig

# Bowman et al., Table 11: the Penn Treebank VAE.
MODEL = dict(embedding_dim=353, hidden_dim=191, latent_dim=13, word_keep_rate=0.62)


def run(sequences, vocab_size: int, cfg: TrainConfig, steps: int, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_model("sentence-vae", MODEL, vocab_size)
    train_locally(model, sequences, cfg, steps=min(20, steps), device=device)  # warm-up (kernels, allocator)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    metrics = train_locally(model, sequences, cfg, steps=steps, device=device)
    if device == "cuda":
        metrics["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--cpu-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    dataset = PreparedDataset.open(args.data_dir)
    sequences, vocab_size = dataset.read("train"), len(dataset.vocab)
    base = TrainConfig(batch_size=args.batch_size, lr=1e-3, kl_anneal="linear", kl_warmup_steps=args.steps,
                       log_every=max(1, args.steps // 5))
    runs = {"cpu fp32": ("cpu", base, args.cpu_steps)}
    for precision in ("none", "bf16", "fp16"):
        runs[f"cuda {precision if precision != 'none' else 'fp32'}"] = (
            "cuda", dataclasses.replace(base, mixed_precision=precision), args.steps)
    results = {name: run(sequences, vocab_size, cfg, steps, device) for name, (device, cfg, steps) in runs.items()}

    reference = results["cuda fp32"]["tokens_per_sec"]
    table = Table(title=f"sentence VAE training throughput on {torch.cuda.get_device_name()} "
                        f"(batch {args.batch_size}, model {MODEL})")
    for column in ("run", "steps", "tokens/sec", "ratio to cuda fp32", "final NLL bound", "peak GPU MB"):
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, str(runs[name][2]), f"{metrics['tokens_per_sec']:,.0f}",
                      f"{metrics['tokens_per_sec'] / reference:.2f}", f"{metrics['nll_bound']:.2f}",
                      f"{metrics.get('peak_mem_mb', 0):,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
