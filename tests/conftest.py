"""Shared fixtures. Ray tests share one local Ray instance per session (start-up costs 5-9 s and ~1 GB)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from skip_policy import (  # noqa: F401
    pytest_make_collect_report, pytest_runtest_makereport, pytest_sessionfinish, pytest_terminal_summary)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


REPO = Path(__file__).resolve().parents[1]


def run_without_checkout(code: str, cwd: Path, env: dict[str, str] | None = None,
                         timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python of this environment that cannot import the checkout's packages: the editable
    install's import hook and the checkout's path entries are removed first, and the code starts only once
    `seqlvm` and `pipelines` are unimportable, so whatever of them it imports comes from elsewhere."""
    prelude = textwrap.dedent(f"""
        import importlib.util, sys
        sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
        sys.path[:] = [p for p in sys.path if p not in ("", {str(REPO)!r})]
        assert importlib.util.find_spec("seqlvm") is None and importlib.util.find_spec("pipelines") is None
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_corpus(path: Path, sentences: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences) + "\n")
    return path


def wait_for(check, timeout: float, what: str, poll: float = 0.2, log: Path | None = None):
    """The first true value of `check()`, polled every `poll` s: a test waits for a state, never for a guessed time.
    Times out with an assertion naming what it waited for (and the end of `log`, a process's output)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def committed_checkpoint(train_dir: Path) -> str | None:
    """The latest checkpoint of a Ray Train run that Train has recorded as committed in its manager's snapshot
    (every worker reported it; the checkpoint's folder can exist earlier)."""
    try:
        latest = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text()).get(
            "latest_checkpoint_result")
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return None
    return latest and latest["checkpoint_dir_name"]


SMALL_CORPUS = [
    "the cat sat on the mat .", "a dog ran in the park .", "the cat ran to the dog .",
    "my lord , the king is here .", "to be or not to be .", "the dog sat on the cat .",
    "a king ran in the park .", "the mat is here .", "not the king , my lord !", "is the dog here ?",
] * 6


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The models in tests are tiny: a second intra-op thread only adds synchronisation, which on a busy 2-core
    machine made some tests tens of times slower. (Ray's workers are other processes, with their own setting.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False,
             object_store_memory=512 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory) -> Path:
    """The built-in corpus, prepared once per session with a small vocabulary for fast models."""
    from pipelines.text import TextOptions, prepare_text

    out = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare_text("builtin:shakespeare", out, TextOptions(vocab_size=2000, max_length=30))
    return out


@pytest.fixture(scope="session")
def shakespeare_small_splits(tmp_path_factory) -> Path:
    """The built-in corpus prepared as `shakespeare` is, but with 1 % of it for validation and 1 % for test (about
    450 sequences each, not 2,400): for the runs that end by evaluating whole splits, a sequence at a time (a
    training run's test NLL, the evaluation a sweep registers its best trial with), where a test checks what is
    logged and registered, not the split's size."""
    from pipelines.text import TextOptions, prepare_text

    out = tmp_path_factory.mktemp("data") / "shakespeare-small-splits"
    prepare_text("builtin:shakespeare", out, TextOptions(vocab_size=2000, max_length=30, valid_fraction=0.01,
                                                         test_fraction=0.01))
    return out
