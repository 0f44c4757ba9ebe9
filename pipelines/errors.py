"""The base of every user-facing error, at the lowest layer that raises one, and how a chain of exceptions is told
in one line."""


class SeqlvmError(Exception):
    """A user-facing problem (bad input, bad config). The CLI prints it on one line and exits non-zero."""

    exit_code = 2


def root_cause(exc: BaseException) -> str:
    """`Type: last line` of the innermost exception a chain of `raise ... from` leads to (Ray wraps a worker's
    error in several layers)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
