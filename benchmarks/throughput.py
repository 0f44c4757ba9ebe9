"""Training throughput (tokens/sec) through Ray Train against a plain PyTorch loop: the same sentence VAE, data,
configuration and number of steps, run (1) by a TorchTrainer with one worker executing the real
`seqlvm.training.worker.train_loop_per_worker` on the payload the `seqlvm train` driver builds, logging to a
throw-away MLflow store, and (2) by `seqlvm.training.local.train_locally` in this process.

Ray's steady-state rate is the mean of the `train/tokens_per_sec` windows its rank-0 worker logs to MLflow,
first window excluded; the plain loop's is measured over the same windows (first excluded) with a forward
hook that counts tokens. Ray gives a Train worker holding 1 CPU OMP_NUM_THREADS=1, so torch runs one thread
there: the plain loop is timed with this process's default thread count and with that of the worker.

    .venv/bin/python benchmarks/throughput.py --steps 300 --batch-size 64    # ~7 min on 2 CPU cores
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from _common import DEFAULT_DATA, MODEL, prepare_shakespeare  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.dataset import PreparedDataset  # noqa: E402
from seqlvm import tracking  # noqa: E402
from seqlvm.cluster.ray_runtime import ensure_ray  # noqa: E402
from seqlvm.models import build_model  # noqa: E402
from seqlvm.training import TrackedRun, TrainRequest, WorkerTask, build_trainer, prepare_run  # noqa: E402
from seqlvm.training.local import train_locally  # noqa: E402
from seqlvm.training.spec import RunSpec, TrainConfig  # noqa: E402


def _torch_threads() -> int:
    return torch.get_num_threads()


def run_ray(data_dir: Path, vocab, overrides: list[str], workdir: Path, console: Console) -> dict:
    """One TorchTrainer fit, as `seqlvm train` sets it up (without the final test evaluation)."""
    import ray

    request = TrainRequest(data_dir=str(data_dir), model_name="sentence-vae", overrides=overrides, workers=1,
                           workdir=str(workdir))
    dataset, spec = prepare_run(request)
    uri = tracking.default_tracking_uri(workdir)
    experiment = tracking.ensure_experiment(uri, "throughput", workdir)
    run = TrackedRun.open(uri, experiment, "throughput", spec, dataset, request.workers)
    started = time.time()
    ensure_ray(1)
    try:
        task = WorkerTask.of(spec, dataset, run)
        result = build_trainer(request, dataset, task, "throughput", str(workdir / "ray")).fit()
        wall = time.time() - started
        threads = ray.get(ray.remote(num_cpus=1)(_torch_threads).remote())  # as in the 1-CPU Train worker
    finally:
        ray.shutdown()
    if result.error:
        raise result.error
    steps, rates = tracking.metric_history(uri, run.run_id, "train/tokens_per_sec")
    console.print(f"ray: {len(rates)} windows logged to MLflow at steps {steps[:3]}..{steps[-1:]}; "
                  f"first window {rates[0]:.0f} tok/s (excluded)")
    return {"steady": statistics.mean(rates[1:]), "windows": len(rates) - 1, "wall": wall, "threads": threads}


def run_plain(sequences, model_config: dict, cfg: TrainConfig, steps: int, vocab_size: int, threads: int,
              console: Console) -> dict:
    """train_locally with `threads` torch threads; steady rate over the logged windows after the first."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = build_model("sentence-vae", model_config, vocab_size)
    counted = [0.0]  # tokens through the model's forward so far

    def count(_module, _inputs, out) -> None:
        counted[0] += float(out.totals["steps"])

    model.register_forward_hook(count)
    marks: list[tuple[float, float]] = []  # (time, tokens so far) at the end of each window

    def on_log(step: int, metrics: dict) -> None:
        marks.append((time.time(), counted[0]))
        if step % (cfg.log_every * 5) == 0 or step == steps:
            console.print(f"plain ({threads} thread{'s' if threads > 1 else ''}): step {step:>5}/{steps} | "
                          f"nll bound {metrics['nll_bound']:7.2f} | {time.time() - started:5.1f}s")

    started = time.time()
    try:
        train_locally(model, sequences, cfg, steps, on_log)
    finally:
        torch.set_num_threads(default_threads)
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return {"steady": (n1 - n0) / (t1 - t0), "windows": len(marks) - 1, "wall": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps for each loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--log-every", type=int, default=20, help="steps per throughput window")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args()
    if args.steps < 3 * args.log_every:
        parser.error("--steps must cover at least 3 windows of --log-every steps")

    console = Console(highlight=False, width=100)
    data_dir, vocab = prepare_shakespeare(args.data_dir, console)
    # Evaluate only once, at the end (outside every timed window), on a few batches; one epoch is never reached.
    overrides = [f"model.{k}={v}" for k, v in MODEL.items()] + [
        f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}", "train.epochs=1000",
        f"train.log_every={args.log_every}", f"train.eval_every={args.steps + 1}", "train.eval_batches=5",
        "train.lr=0.002"]
    spec = RunSpec.build(None, overrides, "sentence-vae")
    console.print(f"{args.steps} steps, batch {args.batch_size}, model {spec.model}")

    with tempfile.TemporaryDirectory(prefix="seqlvm-throughput-") as tmp:
        ray_res = run_ray(data_dir, vocab, overrides, Path(tmp), console)
    started = time.time()
    sequences = PreparedDataset.open(str(data_dir)).read("train")
    read_seconds = time.time() - started
    plain = {threads: run_plain(sequences, dataclasses.asdict(spec.model), spec.train, args.steps, len(vocab), threads,
                                console)
             for threads in sorted({torch.get_num_threads(), ray_res["threads"]}, reverse=True)}

    table = Table(title=f"Training throughput: sentence VAE on Shakespeare, {args.steps} steps of batch "
                        f"{args.batch_size}; steady = windows of {args.log_every} steps, first excluded")
    for column in ("loop", "torch threads", "steady tok/s", "windows", "end-to-end s", "Ray / this"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    table.add_row("Ray Train, 1 worker", str(ray_res["threads"]), f"{ray_res['steady']:,.0f}",
                  str(ray_res["windows"]), f"{ray_res['wall']:.1f}", "")
    for threads, res in plain.items():
        table.add_row("plain PyTorch", str(threads), f"{res['steady']:,.0f}", str(res["windows"]),
                      f"{res['wall'] + read_seconds:.1f}", f"{ray_res['steady'] / res['steady']:.2f}")
    console.print(table)
    console.print("end-to-end: Ray from ray.init to fit() returning (start-up, Ray Data streaming, one final "
                  "validation and checkpoint); plain: reading the split + train_locally")


if __name__ == "__main__":
    main()
