"""The `seqlvm` command line: prepare, train, tune, registry, evaluate, sample, models, submit, jobs, cluster,
reproduce.
Each command group has a module with its parsers (`add_parsers`) and its commands (`COMMANDS`)."""
from __future__ import annotations

import argparse
import os

from pipelines.errors import SeqlvmError
from seqlvm import run_log
from seqlvm.cli import cluster, data, registry, reproduce, sample, score, serve, sweep, train
from seqlvm.cli.output import console

GROUPS = (data, train, sweep, registry, sample, score, serve, cluster, reproduce)
COMMANDS = {name: command for group in GROUPS for name, command in group.COMMANDS.items()}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line gets one line naming the problem (and where the help is), exit code 2."""

    def error(self, message: str):
        console.print(f"{self.prog}: error: {message} (see {self.prog} --help)", markup=False, highlight=False,
                      soft_wrap=True)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="seqlvm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SeqlvmError as exc:
        if os.environ.get("SEQLVM_TRACEBACK"):  # for bug reports: the whole chain behind the one line
            import traceback
            traceback.print_exception(exc)
        console.print(f"seqlvm: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("seqlvm: interrupted", markup=False)
        return 130
    finally:
        # A quiet run or sweep diverted the process's output into its log file. The program keeps it there to the
        # end, where Ray's shutdown writes its last lines; a caller of main() (a test, a script) gets it back.
        if argv is not None:
            run_log.restore()
    return 0
