"""Where the command line writes: messages to stderr (`console`), results as tables to stdout (`out`)."""
from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from seqlvm.run_log import TerminalFile

TABLE_WIDTH = 100  # what a table of many columns is fitted to
# Both reach the terminal even while a run diverts the process's output into its log file (seqlvm.run_log).
console = Console(file=TerminalFile(2), soft_wrap=True)
# Tables go to stdout; when it is a file or pipe, rich would cut them at 80 columns.
out = Console(file=TerminalFile(1), width=None if TerminalFile(1).isatty() else 160)


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


def percent(value) -> str:
    return "" if value is None else f"{value:.0%}"


def fitted_table(title: str, headers: list[str], rows: list[list[str]], width: int = TABLE_WIDTH):
    """A table of `rows` under `headers` if it fits `width` columns; else transposed (a row per header, a column
    per row), split into as many tables as it takes to fit."""
    if sum(_column_width([header, *[row[i] for row in rows]]) for i, header in enumerate(headers)) + 1 <= width:
        return _table(title, headers, rows)
    parts, used = [[]], _column_width(headers) + 1
    for row in rows:
        if parts[-1] and used + _column_width(row) > width:
            parts.append([])
            used = _column_width(headers) + 1
        parts[-1].append(row)
        used += _column_width(row)
    return Group(*[_table(title if i == 0 else "", [headers[0], *[row[0] for row in part]],
                          [[header, *[row[j] for row in part]] for j, header in enumerate(headers) if j])
                   for i, part in enumerate(parts)])


def _column_width(cells: list[str]) -> int:
    """Columns a rich table's column of these cells takes: the widest cell, its padding and a border."""
    return max(len(text) for text in cells) + 3


def _table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title or None)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
