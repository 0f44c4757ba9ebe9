"""The mutation check's plants that need no Ray (tests/mutation_check.py --fast), run in CI: each planted fault makes
at least one of its named tests fail. The plants that need Ray run by hand (docs/testing.md#planted-faults)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)


def test_every_fast_plant_is_caught():
    script = Path(__file__).parent / "mutation_check.py"
    result = subprocess.run([sys.executable, str(script), "--fast"], capture_output=True, text=True, timeout=900)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines[-1].startswith("caught "), result.stdout[-5000:] + result.stderr[-3000:]
    caught, total = (int(word) for word in lines[-1].split()[1::2])
    assert caught == total >= 10, lines[-1]
