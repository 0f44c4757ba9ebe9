"""Training throughput (tokens/sec) through Ray Train against a plain PyTorch loop: the same sentence VAE, data,
configuration and number of steps, run (1) by a TorchTrainer with one worker executing the real
`seqlvm.train_loop.train_loop_per_worker` on the payload the `seqlvm train` driver builds, logging to a
throw-away MLflow store, and (2) by `seqlvm.local_training.train_locally` in this process.

Ray's steady-state rate is the mean of the `train/tokens_per_sec` windows its rank-0 worker logs to MLflow,
first window excluded; the plain loop's is measured over the same windows (first excluded) with a forward
hook that counts tokens.

    .venv/bin/python benchmarks/throughput.py --steps 300 --batch-size 64
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from _common import DEFAULT_DATA, MODEL, prepare_shakespeare  # noqa: E402
from pipelines.shards import read_manifest  # noqa: E402
from pipelines.stream import read_split  # noqa: E402
from seqlvm import tracking  # noqa: E402
from seqlvm.config import TrainConfig, build_run_config  # noqa: E402
from seqlvm.local_training import train_locally  # noqa: E402
from seqlvm.models import build_model, model_class  # noqa: E402
from seqlvm.ray_runtime import ensure_ray  # noqa: E402
from seqlvm.training import TrainRequest, _payload, _trainer  # noqa: E402


def run_ray(data_dir: Path, vocab, overrides: list[str], workdir: Path, console: Console) -> dict:
    """One TorchTrainer fit, as `seqlvm train` sets it up (without the final test evaluation)."""
    import ray

    request = TrainRequest(data_dir=str(data_dir), model_name="sentence-vae", overrides=overrides, workers=1,
                           workdir=str(workdir))
    run_config, _ = build_run_config(model_class, None, overrides, "sentence-vae")
    uri = tracking.default_tracking_uri(workdir)
    experiment = tracking.ensure_experiment(uri, "throughput", workdir)
    run_id, _ = tracking.start_or_resume_run(uri, experiment, "throughput", {})
    manifest = read_manifest(data_dir)
    payload = _payload(request, run_config, manifest, vocab, uri, run_id)
    started = time.time()
    ensure_ray(1)
    try:
        result = _trainer(request, payload, "throughput", workdir / "ray").fit()
        wall = time.time() - started
    finally:
        ray.shutdown()
    if result.error:
        raise result.error
    steps, rates = tracking.metric_history(uri, run_id, "train/tokens_per_sec")
    console.print(f"ray: {len(rates)} windows logged to MLflow at steps {steps[:3]}..{steps[-1:]}; "
                  f"first window {rates[0]:.0f} tok/s (excluded)")
    return {"steady": statistics.mean(rates[1:]), "windows": len(rates) - 1, "wall": wall,
            "final_step": int(result.metrics.get("step", 0))}


def run_plain(data_dir: Path, payload_model: dict, cfg: TrainConfig, steps: int, vocab_size: int,
              console: Console) -> dict:
    sequences = read_split(str(data_dir), "train")
    torch.manual_seed(cfg.seed)
    model = build_model("sentence-vae", payload_model, vocab_size)
    counted = {"tokens": 0.0}
    model.register_forward_hook(lambda _m, _i, out: counted.__setitem__(
        "tokens", counted["tokens"] + float(out.totals["tokens"])))
    marks: list[tuple[float, float]] = []  # (time, tokens so far) at each logged window

    def on_log(step: int, metrics: dict) -> None:
        marks.append((time.time(), counted["tokens"]))
        if step % (cfg.log_every * 5) == 0 or step == steps:
            console.print(f"plain: step {step:>5}/{steps} | nll bound {metrics['nll_bound']:7.2f}")

    started = time.time()
    result = train_locally(model, sequences, cfg, steps, on_log)
    wall = time.time() - started
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return {"steady": (n1 - n0) / (t1 - t0), "windows": len(marks) - 1, "wall": wall,
            "whole_run": result["tokens_per_sec"], "final_step": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps for each loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--log-every", type=int, default=20, help="steps per throughput window")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args()
    if args.steps < 3 * args.log_every:
        parser.error("--steps must cover at least 3 windows of --log-every steps")

    console = Console(highlight=False)
    data_dir, vocab = prepare_shakespeare(args.data_dir, console)
    # Evaluate only once, at the end (outside every timed window); one epoch is never reached.
    overrides = [f"model.{k}={v}" for k, v in MODEL.items()] + [
        f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}", "train.epochs=1000",
        f"train.log_every={args.log_every}", f"train.eval_every={args.steps + 1}", "train.eval_batches=5",
        "train.lr=0.002"]
    run_config, _ = build_run_config(model_class, None, overrides, "sentence-vae")
    console.print(f"{args.steps} steps, batch {args.batch_size}, model {run_config.model}; "
                  f"driver torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="seqlvm-throughput-") as tmp:
        ray_res = run_ray(data_dir, vocab, overrides, Path(tmp), console)
    plain = run_plain(data_dir, run_config.model, run_config.train, args.steps, len(vocab), console)

    table = Table(title=f"Training throughput, sentence VAE on Shakespeare: {args.steps} steps, "
                        f"batch {args.batch_size}, windows of {args.log_every} steps")
    table.add_column("loop")
    table.add_column("steady tok/s (first window excluded)", justify="right")
    table.add_column("windows", justify="right")
    table.add_column("end-to-end wall s", justify="right")
    table.add_column("ratio Ray / plain", justify="right")
    table.add_row("Ray Train, 1 worker", f"{ray_res['steady']:,.0f}", str(ray_res["windows"]),
                  f"{ray_res['wall']:.1f}", f"{ray_res['steady'] / plain['steady']:.2f}")
    table.add_row("plain PyTorch", f"{plain['steady']:,.0f}", str(plain["windows"]), f"{plain['wall']:.1f}",
                  "1.00")
    console.print(table)
    console.print(f"end-to-end (Ray incl. start-up, data streaming, final eval, checkpoint; plain incl. reading "
                  f"the split): Ray {ray_res['wall']:.1f}s vs plain {plain['wall']:.1f}s; "
                  f"plain whole-run {plain['whole_run']:,.0f} tok/s")


if __name__ == "__main__":
    main()
