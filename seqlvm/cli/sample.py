"""`seqlvm sample`: sentences from the prior, posteriors and homotopies of a text model; rendered prior samples
(sound, handwriting, piano rolls) of a frame model."""
from __future__ import annotations

from rich.table import Table

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import console, out


def add_parsers(sub) -> None:
    sample = sub.add_parser("sample", help="text: decode sentences from the prior, posteriors and homotopies; "
                                           "frames: render prior samples as sound, handwriting or piano rolls")
    sample.add_argument("checkpoint", help="checkpoint folder, training-run folder, runs:/ or models:/ URI")
    sample.add_argument("--n", type=int, default=5, help="sentences from the prior (each greedy and sampled)")
    sample.add_argument("--sentence", action="append", default=[], help="decode from this sentence's posterior")
    sample.add_argument("--between", nargs=2, metavar=("FIRST", "SECOND"), help="homotopy between two sentences")
    sample.add_argument("--steps", type=int, default=7, help="points on the homotopy")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--max-len", type=int, default=40)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--length", type=int, help="frame models: time steps per sample (default: the training "
                                                   "data's mean length)")
    sample.add_argument("--out", default="runs/samples", help="frame models: folder for the rendered files")
    sample.add_argument("--no-log", action="store_true", help="frame models: do not log the files to the "
                                                              "model's MLflow run")
    sample.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ checkpoints")


def prior_table(model, data, n: int, temperature: float = 1.0, max_len: int = 40, title: str = "") -> Table:
    from seqlvm import generate

    table = Table(title=title or "samples from the prior")
    table.add_column("greedy")
    table.add_column(f"sampled (T={temperature})")
    greedy = generate.from_prior(model, data, n, greedy=True, max_len=max_len)
    sampled = generate.from_prior(model, data, n, greedy=False, max_len=max_len, temperature=temperature)
    for g, s in zip(greedy, sampled):
        table.add_row(g, s)
    return table


def cmd_sample(args) -> None:
    import torch

    from seqlvm import generate
    from seqlvm.checkpoint import load_model

    torch.manual_seed(args.seed)
    loaded = load_model(args.checkpoint, args.tracking_uri)
    model, data = loaded.model, loaded.data
    if not data.is_text:
        sample_frames(args, loaded)
        return
    out.print(prior_table(model, data, args.n, args.temperature, args.max_len))
    if args.sentence:
        table = Table(title="decoded from the posterior")
        for column in ("input, as the model reads it", "mean (greedy)", "posterior samples (greedy)"):
            table.add_column(column)
        for sentence, mean, samples in generate.from_posterior(model, data, args.sentence, max_len=args.max_len):
            table.add_row(data.text(data.encode_sentences([sentence])[0]), mean, "\n".join(samples))
        out.print(table)
    if args.between:
        path = generate.homotopy(model, data, *args.between, steps=args.steps, max_len=args.max_len)
        table = Table(title="homotopy", caption=f"{len(set(path))} different sentences on the path")
        table.add_column("t", justify="right")
        table.add_column("greedy decode")
        for i, sentence in enumerate(path):
            table.add_row(f"{i / max(1, args.steps - 1):.2f}", sentence)
        out.print(table)


def rendered_samples(loaded, n: int, length: int | None, folder: str, title: str):
    """Render n prior samples of a frame model into `folder`. Returns (a table of the files, their paths)."""
    from seqlvm.render import render_prior_samples

    paths = render_prior_samples(loaded.model, loaded.data, n, length, folder)
    table = Table(title=f"{title} ({loaded.data.modality})")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for path in paths:
        table.add_row(str(path), f"{path.stat().st_size:,}")
    return table, paths


def sample_frames(args, loaded) -> None:
    """Render prior samples of a frame model into files, list them, and log them to the model's MLflow run."""
    from pathlib import Path

    from seqlvm import tracking

    if args.sentence or args.between:
        raise SeqlvmError(f"{args.checkpoint}: --sentence and --between need a text model")
    table, paths = rendered_samples(loaded, args.n, args.length, args.out,
                                    f"{args.n} samples from the prior of {args.checkpoint}")
    out.print(table)
    run_id = loaded.payload.get("mlflow_run_id")
    if args.no_log or not run_id:
        return
    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path("runs").absolute())
    try:
        tracking.log_samples(uri, run_id, paths)
    except Exception as exc:  # the files are written either way; say why they are not in MLflow
        console.print(f"[yellow]not logged to MLflow run {run_id}[/]: {str(exc).splitlines()[0]}")
        return
    out.print(f"logged to MLflow run {run_id} under samples/  ({uri})")


COMMANDS = {"sample": cmd_sample}
