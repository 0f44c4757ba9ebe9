class SeqlvmError(Exception):
    """A user-facing problem (bad input, bad config). The CLI prints it on one line and exits non-zero."""

    exit_code = 2
