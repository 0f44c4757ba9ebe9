"""The progress bar of a preparation: tasks done of their total, time so far and an ETA; transient, and off
without a console (library calls, tests)."""
from __future__ import annotations


def task_progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=console is None, transient=True)
