"""`seqlvm prepare KIND`: one reader per kind of data (the registry in pipelines/modalities.py), one flag per
field of its options."""
from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from rich.table import Table

from pipelines.errors import SeqlvmError
from pipelines.handlers import PREPARERS
from seqlvm.cli.output import console, out


def _add_options_flags(parser, options_class) -> None:
    """One flag per field of a reader's options dataclass (its metadata's help, and the default)."""
    defaults = options_class()
    for f in fields(options_class):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def add_parsers(sub) -> None:
    prepare = sub.add_parser("prepare", help="turn a corpus into Parquet shards + manifest (+ vocabulary for text)")
    kinds = prepare.add_subparsers(dest="modality", required=True)
    for command, preparer in PREPARERS.items():
        parser = kinds.add_parser(command, help=preparer.sources)
        parser.add_argument("--source", required=True, help=preparer.sources)
        parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset prepared differently")
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--address", help="run the preparation as Ray Data tasks on the Ray cluster at this address "
                           "(HOST:PORT of its GCS, or auto); --out must then be a URI or a path every node mounts")
        where.add_argument("--cpus", type=int, help="run it as Ray Data tasks on a local Ray with this many CPUs")
        _add_options_flags(parser, preparer.load()[0])


def cmd_prepare(args) -> None:
    from pipelines.dataset import PreparedDataset

    options_class, prepare = PREPARERS[args.modality].load()
    options = options_class(**{f.name: getattr(args, f.name) for f in fields(options_class)})
    prepare(args.source, args.out, options, overwrite=args.overwrite, console=console, work=_work(args))
    dataset = PreparedDataset.open(args.out)
    if dataset.is_text:
        title = f"{args.out}  ({dataset.source}, vocabulary {len(dataset.vocab):,})"
        columns = {"sentences": "sequences", "tokens": "steps", "unknown tokens": "unknown_steps"}
    else:
        title = f"{args.out}  ({dataset.source}, {dataset.modality}, frames of {dataset.frame_dim})"
        columns = {"sequences": "sequences", "time steps": "steps"}
    table = Table(title=title)
    for column in ("split", *columns, "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for name, split in dataset.splits.items():
        table.add_row(name, *[f"{getattr(split, key):,}" for key in columns.values()], str(len(split.shards)))
    out.print(table)
    if dataset.skipped:
        console.print(f"[yellow]{len(dataset.skipped)} unreadable files skipped[/] (listed in the manifest)")


def _work(args):
    """Where the preparation's tasks run: in this process, or on Ray when --address or --cpus says so (started at
    the preparation's first task, once its input has been checked)."""
    from pipelines.work import InProcess, OnRay

    if args.address is None and args.cpus is None:
        return InProcess()
    if args.cpus is not None and args.cpus < 1:
        raise SeqlvmError(f"--cpus {args.cpus}: give at least 1")

    def start():
        from seqlvm.cluster.ray_runtime import ensure_ray
        ensure_ray(address=args.address, dashboard=False, cpus=args.cpus, logging_level=logging.ERROR)
    if args.address:
        from seqlvm.cluster.ray_runtime import check_address
        check_address(args.address)
    return OnRay(start)


COMMANDS = {"prepare": cmd_prepare}
