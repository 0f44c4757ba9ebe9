"""The `seqlvm` command line: prepare, train, evaluate, sample, models."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from rich.console import Console
from rich.table import Table

from seqlvm.errors import SeqlvmError

console = Console(stderr=True)
out = Console()


def _add_prepare(sub) -> None:
    from pipelines.text import TextOptions

    prepare = sub.add_parser("prepare", help="turn a corpus into Parquet shards + vocabulary + manifest")
    kinds = prepare.add_subparsers(dest="modality", required=True)
    text = kinds.add_parser("text", help="sentences: .txt/.txt.gz files or folders, hf:DATASET, builtin:shakespeare")
    text.add_argument("--source", required=True, help="local path, hf:owner/name (streamed), or builtin:shakespeare")
    text.add_argument("--out", required=True, help="output folder (replaced atomically)")
    text.add_argument("--overwrite", action="store_true", help="replace an existing dataset prepared differently")
    defaults = TextOptions()
    for f in fields(TextOptions):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            text.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            text.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model on prepared data with Ray Train, tracked in MLflow")
    train.add_argument("--data", required=True, help="a folder written by `seqlvm prepare`")
    train.add_argument("--model", help="registered model name (see `seqlvm models`; default sentence-vae)")
    train.add_argument("--config", help="YAML file with `model:` and `train:` sections")
    train.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    train.add_argument("--cpus-per-worker", type=float, default=1.0,
                       help="CPUs each worker reserves; also its torch thread count (default 1)")
    train.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    train.add_argument("--experiment", default="seqlvm", help="MLflow experiment name")
    train.add_argument("--name", help="run name; reusing a name resumes that run from its latest checkpoint")
    train.add_argument("--workdir", default="runs", help="local folder for the default MLflow store and Ray storage")
    train.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    train.add_argument("--no-final-eval", action="store_true", help="skip the test-set evaluation at the end")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.01")


def _add_evaluate_and_sample(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="ELBO, KL, NLL bound, importance-weighted NLL, PPL, active units")
    evaluate.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    evaluate.add_argument("--data", help="prepared data (default: the data the model was trained on)")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--samples", type=int, default=500, help="importance samples per sentence")
    evaluate.add_argument("--chunk", type=int, help="importance samples decoded at once (default: what fits "
                                                    "a 256 MB logits budget)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N sentences")
    evaluate.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")

    sample = sub.add_parser("sample", help="decode sentences from the prior, posteriors and homotopies")
    sample.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    sample.add_argument("--n", type=int, default=5, help="sentences from the prior (each greedy and sampled)")
    sample.add_argument("--sentence", action="append", default=[], help="decode from this sentence's posterior")
    sample.add_argument("--between", nargs=2, metavar=("FIRST", "SECOND"), help="homotopy between two sentences")
    sample.add_argument("--steps", type=int, default=7, help="points on the homotopy")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--max-len", type=int, default=40)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")

    sub.add_parser("models", help="list the registered model names")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_train(sub)
    _add_evaluate_and_sample(sub)
    return parser


def cmd_prepare(args) -> None:
    from pipelines.text import TextOptions, prepare_text

    options = TextOptions(**{f.name: getattr(args, f.name) for f in fields(TextOptions)})
    manifest = prepare_text(args.source, args.out, options, overwrite=args.overwrite, console=console)
    table = Table(title=f"{args.out}  ({manifest['source']}, vocabulary {manifest['vocab_size']:,})")
    for column in ("split", "sentences", "tokens", "unknown tokens", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, info in manifest["splits"].items():
        table.add_row(split, f"{info['sentences']:,}", f"{info['tokens']:,}", f"{info['unknown_tokens']:,}",
                      str(len(info["shards"])))
    out.print(table)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    for key in keys:
        cells = []
        for metrics in rows.values():
            value = metrics.get(key)
            cells.append("" if value is None else (f"{value:,.0f}" if float(value).is_integer() else f"{value:.3f}"))
        table.add_row(key, *cells)
    return table


def cmd_train(args) -> None:
    from seqlvm.training import TrainRequest, run_training

    request = TrainRequest(data_dir=args.data, model_name=args.model, config_file=args.config,
                           overrides=args.overrides, workers=args.workers,
                           cpus_per_worker=args.cpus_per_worker, max_steps=args.max_steps,
                           tracking_uri=args.tracking_uri, experiment=args.experiment, name=args.name,
                           workdir=args.workdir, address=args.address, final_eval=not args.no_final_eval)
    result = run_training(request, console=console)
    valid = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("valid/")}
    out.print(metrics_table(f"run {result.run_name}", {"valid": valid, "test": result.test_metrics}))
    out.print(f"checkpoint: {result.checkpoint_dir}")
    out.print(f"MLflow run: runs:/{result.mlflow_run_id}/checkpoint  ({result.tracking_uri})")


def cmd_evaluate(args) -> None:
    from seqlvm.training import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, iw_samples=args.samples,
                                  chunk=args.chunk, limit=args.limit, tracking_uri=args.tracking_uri,
                                  console=console)
    out.print(metrics_table(f"{args.checkpoint} on {args.split}", {args.split: metrics}))


def cmd_sample(args) -> None:
    import torch

    from seqlvm import generate
    from seqlvm.checkpoint import load_model

    torch.manual_seed(args.seed)
    model, vocab, _ = load_model(args.checkpoint, args.tracking_uri)
    table = Table(title="samples from the prior")
    table.add_column("greedy")
    table.add_column(f"sampled (T={args.temperature})")
    greedy = generate.from_prior(model, vocab, args.n, greedy=True, max_len=args.max_len)
    sampled = generate.from_prior(model, vocab, args.n, greedy=False, max_len=args.max_len,
                                  temperature=args.temperature)
    for g, s in zip(greedy, sampled):
        table.add_row(g, s)
    out.print(table)
    if args.sentence:
        table = Table(title="decoded from the posterior")
        for column in ("input", "mean (greedy)", "posterior samples (greedy)"):
            table.add_column(column)
        for sentence, mean, samples in generate.from_posterior(model, vocab, args.sentence, max_len=args.max_len):
            table.add_row(sentence, mean, "\n".join(samples))
        out.print(table)
    if args.between:
        table = Table(title="homotopy")
        table.add_column("t", justify="right")
        table.add_column("greedy decode")
        path = generate.homotopy(model, vocab, *args.between, steps=args.steps, max_len=args.max_len)
        for i, sentence in enumerate(path):
            table.add_row(f"{i / max(1, args.steps - 1):.2f}", sentence)
        out.print(table)


def cmd_models(args) -> None:
    from seqlvm.models import MODELS

    for name, cls in sorted(MODELS.items()):
        out.print(f"{name:<14} {(cls.__doc__ or '').strip().splitlines()[0]}")


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SeqlvmError as exc:
        console.print(f"seqlvm: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("seqlvm: interrupted", markup=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
