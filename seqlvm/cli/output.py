"""Where the command line writes: messages to stderr (`console`), results as tables to stdout (`out`)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
# Tables go to stdout; when it is a file or pipe, rich would cut them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)


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


def rows_table(title: str, rows: list[dict]) -> Table | str:
    if not rows:
        return f"{title}: none"
    table = Table(title=title)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(c, "")) for c in columns])
    return table


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 0.01 else f"{value:.3f}"
    return str(value)
