"""No silent skips in CI: with CI=true, a test that skips (for a missing program, package or file) fails instead,
unless docs/testing.md lists it under "Optional tests" with the reason it may skip. The summary always says how
many tests skipped. Loaded by conftest.py (and by name with `pytest -p skip_policy`)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

TESTING_DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
OPTIONAL_ROW = re.compile(r"^\| `(tests/[^`]+)` \|")


def optional_tests(doc: Path = TESTING_DOC) -> list[str]:
    """The test ids (a file, a test, or a parametrised case) the "Optional tests" table of docs/testing.md lists."""
    if not doc.exists():
        return []
    return [m.group(1) for line in doc.read_text().splitlines() if (m := OPTIONAL_ROW.match(line))]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def listed(nodeid: str, optional: list[str]) -> bool:
    return any(nodeid == test or nodeid.startswith((f"{test}::", f"{test}[")) for test in optional)


def skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def unlisted_skip(report) -> bool:
    return (in_ci() and report.skipped and not hasattr(report, "wasxfail")
            and not listed(report.nodeid, optional_tests()))


def complaint(report) -> str:
    return (f"skipped in CI ({skip_reason(report)}): install what it needs (make setup), or list it under "
            "'Optional tests' in docs/testing.md with the reason")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if unlisted_skip(report):
        report.outcome, report.longrepr = "failed", complaint(report)


SKIPPED_MODULES: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips as a whole stays skipped (failing its collection would stop the whole run), and the run
    fails at its end."""
    outcome = yield
    report = outcome.get_result()
    if unlisted_skip(report):
        SKIPPED_MODULES.append(f"{report.nodeid}: {complaint(report)}")


def pytest_sessionfinish(session, exitstatus):
    if SKIPPED_MODULES and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = sorted({skip_reason(report) for report in skipped})
    terminalreporter.write_line(f"skipped: {len(skipped)}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    for line in SKIPPED_MODULES:
        terminalreporter.write_line(f"FAILED {line}", red=True)
