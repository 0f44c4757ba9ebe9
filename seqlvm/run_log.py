"""Where a command's output goes. Ray, Tune, Train and MLflow write hundreds of INFO lines (and the workers echo
theirs through the driver); a run or sweep diverts the process's stdout and stderr, at the file-descriptor
level so native and child-process output follows, into a log file in its folder. seqlvm's own lines still reach
the terminal: the command line's consoles write to `terminal(fd)`, and a worker's `progress` lines are echoed
there from the driver.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PROGRESS_MARK = "[seqlvm] "  # starts a worker line that the driver echoes to the terminal
_ECHO_HANDLER = "seqlvm_progress"
_terminal: dict[int, object] = {}  # fd -> the stream that reached the terminal before the diversion
_saved_fds: dict[int, int] = {}


def progress(line: str, echo: bool = True) -> None:
    """A worker's progress line: into its log like any output, and with `echo` to the terminal of a diverted driver.
    Written to the real stdout: Train patches print() into a logger that echoes every line twice."""
    sys.__stdout__.write((PROGRESS_MARK if echo else "") + line + "\n")
    sys.__stdout__.flush()


def duration(seconds: float) -> str:
    """A time left or taken, as a person reads it: 45s, 3m20s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def terminal(fd: int):
    """The stream that reaches the terminal for fd 1 or 2: the one kept aside while diverted, else the current
    sys.stdout or sys.stderr (so a test's capture still sees it)."""
    return _terminal.get(fd) or (sys.stdout if fd == 1 else sys.stderr)


def tell(line: str) -> None:
    """A line of seqlvm's own to the terminal's stderr, diverted or not."""
    stream = terminal(2)
    stream.write(line + "\n")
    stream.flush()


class TerminalFile:
    """A file for a rich Console that always writes where `terminal(fd)` says."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> int:
        return terminal(self.fd).write(text)

    def flush(self) -> None:
        terminal(self.fd).flush()

    def isatty(self) -> bool:
        return terminal(self.fd).isatty()

    def fileno(self) -> int:
        return terminal(self.fd).fileno()


def divert(log_path: Path, echo_progress: bool = False) -> None:
    """From now until `restore()`: the process's stdout and stderr (fds 1 and 2) append to `log_path`; with
    `echo_progress`, Ray workers' `progress` lines are also written to the terminal's stderr, without the mark.
    A no-op when already diverted."""
    if _saved_fds:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        stream.flush()
        _saved_fds[fd] = os.dup(fd)
        # A stream that writes to this fd must keep reaching the terminal; any other (a test's capture) is kept.
        _terminal[fd] = (os.fdopen(os.dup(fd), "w", buffering=1) if _writes_to(stream, fd) else stream)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    if echo_progress:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher

        # Ray's own handler prints each worker batch to sys.stdout (the log); this one picks out seqlvm's lines.
        global_worker_stdstream_dispatcher.add_handler(_ECHO_HANDLER, _echo_progress)


def restore() -> None:
    """Undo `divert`: fds 1 and 2 reach the terminal again."""
    if not _saved_fds:
        return
    if "ray._private.ray_logging" in sys.modules:
        sys.modules["ray._private.ray_logging"].global_worker_stdstream_dispatcher.remove_handler(_ECHO_HANDLER)
    for fd, saved in _saved_fds.items():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)
        kept = _terminal.pop(fd)
        if kept not in (sys.stdout, sys.stderr):
            kept.close()
    _saved_fds.clear()


def _writes_to(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _echo_progress(batch: dict) -> None:
    lines = [line[len(PROGRESS_MARK):] for line in batch.get("lines", ()) if line.startswith(PROGRESS_MARK)]
    for line in lines:
        tell(line)
