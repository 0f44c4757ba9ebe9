"""`seqlvm train`, `seqlvm evaluate` and `seqlvm models`."""
from __future__ import annotations

from seqlvm.cli.output import console, metrics_table, out
from seqlvm.cli.score import add_scoring_flags, check_count, scoring_placement

STORAGE_HELP = ("where Ray keeps checkpoints: a URI (s3://bucket/prefix, gs://...) or a folder every node sees; "
                "needed on a multi-node cluster (default: WORKDIR/ray, WORKDIR/tune)")


def add_placement_flags(parser, name_help: str) -> None:
    """Where a run or a sweep logs, keeps its files and runs: shared by `train` and `tune`."""
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    parser.add_argument("--experiment", default="seqlvm", help="MLflow experiment name")
    parser.add_argument("--name", help=name_help)
    parser.add_argument("--workdir", default="runs", help="local folder for the default MLflow store and Ray storage")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's, Tune's and MLflow's output here (default: into a log file in the run's "
                             "folder, its path printed)")


def add_parsers(sub) -> None:
    train = sub.add_parser("train", help="train a model on prepared data with Ray Train, tracked in MLflow")
    train.add_argument("--data", required=True, help="a folder written by `seqlvm prepare`")
    train.add_argument("--model", help="model name (see `seqlvm models`; default: the config's model_name, else "
                                       "sentence-vae for text and vrnn for frames)")
    train.add_argument("--config", help="YAML file with `model:` and `train:` sections")
    train.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    train.add_argument("--cpus-per-worker", type=float, default=1.0,
                       help="CPUs each worker reserves; also its torch thread count (default 1)")
    train.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    add_placement_flags(train, name_help="run name; reusing a name resumes that run from its latest checkpoint")
    train.add_argument("--no-final-eval", action="store_true", help="skip the test-set evaluation at the end")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.01")

    evaluate = sub.add_parser("evaluate", help="ELBO, KL, NLL bound, importance-weighted NLL, PPL; the latent's use "
                                                    "(mutual information, active units, posterior decodes)")
    evaluate.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    evaluate.add_argument("--data", help="prepared data (default: the data the model was trained on)")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--samples", type=int, default=500, help="importance samples per sentence")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N sentences")
    evaluate.add_argument("--word-samples", type=int, default=100,
                          help="words datasets: importance samples per word type for the cross-entropies to the "
                               "word distributions (default 100)")
    evaluate.add_argument("--decodes", type=int, default=500,
                          help="sentence latents: sentences decoded greedily from their posterior mean and scored "
                               "against their input (F1, BLEU-4, distinct share); 0 for none (default 500)")
    evaluate.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")
    add_scoring_flags(evaluate)

    sub.add_parser("models", help="list the registered model names")


def cmd_train(args) -> None:
    from seqlvm.training import TrainRequest, run_training

    request = TrainRequest(data_dir=args.data, model_name=args.model, config_file=args.config,
                           overrides=args.overrides, workers=args.workers,
                           cpus_per_worker=args.cpus_per_worker, max_steps=args.max_steps,
                           tracking_uri=args.tracking_uri, experiment=args.experiment, name=args.name,
                           workdir=args.workdir, storage=args.storage, address=args.address,
                           final_eval=not args.no_final_eval, quiet=not args.verbose)
    result = run_training(request, console=console)
    valid = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("valid/")}
    out.print(metrics_table(f"run {result.run_name}", {"valid": valid, "test": result.test_metrics}))
    out.print(f"checkpoint: {result.checkpoint_dir}")
    out.print(f"MLflow run: runs:/{result.mlflow_run_id}/checkpoint  ({result.tracking_uri})")


def cmd_evaluate(args) -> None:
    from seqlvm.training import evaluate_checkpoint

    check_count("--samples", args.samples, 0)
    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, iw_samples=args.samples,
                                  limit=args.limit, tracking_uri=args.tracking_uri,
                                  console=console, word_samples=args.word_samples, decodes=args.decodes,
                                  scoring=scoring_placement(args))
    out.print(metrics_table(f"{args.checkpoint} on {args.split}", {args.split: metrics}))


def cmd_models(args) -> None:
    from seqlvm.models import MODELS

    for name, cls in sorted(MODELS.items()):
        out.print(f"{name:<14} {(cls.__doc__ or '').strip().splitlines()[0]}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "models": cmd_models}
