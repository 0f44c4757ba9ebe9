"""`seqlvm reproduce`: the papers' tables regenerated, ours beside theirs, as one Ray Tune run."""
from __future__ import annotations

from rich.table import Table

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import console, out
from seqlvm.reproduction.table import BUDGETS, TABLE_NAMES


class RowsFailed(SeqlvmError):
    """Some rows failed; their tables are written, with the reasons."""

    exit_code = 1


def add_parsers(sub) -> None:
    parser = sub.add_parser("reproduce", help="regenerate the papers' tables, ours beside theirs "
                                              f"({', '.join(TABLE_NAMES)})")
    parser.add_argument("tables", nargs="*", metavar="TABLE", help=f"which tables (default: all): "
                                                                  f"{', '.join(TABLE_NAMES)}")
    parser.add_argument("--budget", default="quick", choices=BUDGETS,
                        help="quick: tiny models and few steps, every table in minutes on a laptop (checks that each "
                             "row runs and the trends' signs); paper: the papers' sizes and lengths, for a GPU cluster")
    parser.add_argument("--data-root", help="a folder with the papers' original files (e.g. the Boulanger-Lewandowski "
                                            "pickles): their rows are added, and comparable")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", help="run the rows on the Ray cluster at this address (HOST:PORT of its GCS)")
    where.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: the machine's cores; a row each)")
    parser.add_argument("--out", default="runs/reproduce", help="where the tables (Markdown, CSV), the prepared data "
                                                             "and the log go (default runs/reproduce)")
    parser.add_argument("--results-page", help="a Markdown page (e.g. docs/results.md) whose generated block gets "
                                               "this run's tables")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under --out)")
    parser.add_argument("--experiment", default="reproduce", help="MLflow experiment (default reproduce)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's output here (default: into a log under "
                                                               "--out, its path printed)")


def cmd_reproduce(args) -> None:
    from seqlvm.reproduction import ReproduceRequest, reproduce

    request = ReproduceRequest(tuple(args.tables), args.budget, args.data_root, args.address, args.cpus, args.out,
                               args.tracking_uri, args.experiment, args.results_page, quiet=not args.verbose)
    results = reproduce(request, say=console.print)
    for result in results:
        out.print(result_table(result))
        for check in result.checks:
            out.print(f"  {'holds' if check.holds else 'does NOT hold'}: {check.claim} ({check.detail})",
                      markup=False, highlight=False)
    console.print(f"tables: {request.out}/<table>.md and .csv; all of them: {request.out}/results.md")
    failed = [o for result in results for o in result.outcomes if o.failure]
    if failed:
        raise RowsFailed(f"{len(failed)} of {sum(len(r.outcomes) for r in results)} rows failed, first "
                          f"{failed[0].row.table} / {failed[0].row.name}: {failed[0].failure}")


def result_table(result) -> Table:
    from seqlvm.reproduction.report import number

    table = Table(title=f"{result.table.paper}: {result.table.title} (budget {result.budget})")
    for column in ("row", "metric", "ours", "paper", "comparable", "steps", "wall s"):
        table.add_column(column, justify="right" if column in ("ours", "paper", "steps", "wall s") else "left")
    for record in result.records():
        if record["failure"]:
            table.add_row(record["label"], f"failed: {record['failure']}", "", "", "", str(record["steps"]),
                          f"{record['wall_s']:.0f}")
        else:
            table.add_row(record["label"], record["metric"], number(record["ours"]), number(record["paper"]),
                          "yes" if record["comparable"] else "no", str(record["steps"]), f"{record['wall_s']:.0f}")
    return table


COMMANDS = {"reproduce": cmd_reproduce}
