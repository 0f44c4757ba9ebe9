"""The skip policy itself (tests/skip_policy.py), on planted test files run by a real pytest: in CI a skip fails
unless docs/testing.md lists the test as optional; elsewhere it skips, and the summary counts it."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from skip_policy import TESTING_DOC, listed, optional_tests

TESTS = Path(__file__).parent
PLANTED = {
    "test_needs_a_program.py": "import pytest\n\ndef test_it():\n    pytest.skip('no such program')\n",
    "test_needs_a_package.py": "import pytest\npytest.importorskip('no_such_package')\n\ndef test_it():\n    pass\n",
    "test_runs.py": "def test_it():\n    assert True\n",
}


def run_planted(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    for name, code in PLANTED.items():
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(TESTS), **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "skip_policy", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_in_ci_a_skip_fails_with_its_reason(tmp_path):
    result = run_planted(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    assert "skipped in CI (no such program)" in result.stdout
    assert "skipped in CI (could not import 'no_such_package'" in result.stdout
    assert "1 passed, 1 skipped" in result.stdout and "FAILED test_needs_a_package.py: skipped in CI" in result.stdout


def test_outside_ci_a_skip_skips_and_is_counted(tmp_path):
    result = run_planted(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout
    assert "skipped: 2 (" in result.stdout and "no such program" in result.stdout


def test_optional_tests_are_listed_by_id_and_exist():
    optional = optional_tests()
    assert optional, f"{TESTING_DOC} lists no optional tests"
    for test in optional:
        path, _, rest = test.partition("::")
        name = rest.split("[", 1)[0]
        functions = {node.name for node in ast.walk(ast.parse((TESTS.parent / path).read_text()))
                     if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"docs/testing.md lists {test}, which does not exist"
    assert listed(f"{optional[0]}[a case]", optional) and not listed(f"{optional[0]}_other", optional)
