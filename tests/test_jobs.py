"""The pure parts of `seqlvm submit`: the job's entrypoint, environment and working dir, and the refusals that
keep secrets out of a job's metadata. The real submissions are in test_cluster.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import SeqlvmError
from seqlvm import cli, tracking
from seqlvm.cluster import jobs


def test_seqlvm_commands_run_with_the_clusters_python_from_the_shipped_code():
    assert jobs.entrypoint_of(["seqlvm", "tune", "--data", "a b"]) == "python -m seqlvm.cli tune --data 'a b'"
    assert jobs.entrypoint_of(["python", "x.py"]) == "python x.py"
    with pytest.raises(SeqlvmError, match="nothing to submit"):
        jobs.entrypoint_of([])


def test_the_job_environment_takes_a_tracking_uri_and_plain_variables_but_no_secret(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # a laptop's port-forward: not passed on
    env = jobs.job_env(None, ["SEQLVM_CACHE=/mnt/cache"])
    assert "MLFLOW_TRACKING_URI" not in env and env["SEQLVM_CACHE"] == "/mnt/cache"
    assert jobs.job_env("http://mlflow:5000", [])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN", "HF_TOKEN"):
        with pytest.raises(SeqlvmError, match="looks like a secret"):
            jobs.job_env(None, [f"{name}=hunter2"])
    with pytest.raises(SeqlvmError, match="expected KEY=VALUE"):
        jobs.job_env(None, ["NOVALUE"])
    with pytest.raises(SeqlvmError, match=r"u:\*\*\*@") as refused:
        jobs.job_env("http://u:hunter2@mlflow:5000", [])
    assert "hunter2" not in str(refused.value)


def test_the_job_ships_the_packages_this_seqlvm_runs_from_unless_told_not_to(tmp_path):
    import seqlvm
    runtime = jobs.runtime_env(True, None, {})
    assert [Path(p).name for p in runtime["py_modules"]] == ["seqlvm", "pipelines", "tune"]
    assert Path(runtime["py_modules"][0]) == Path(seqlvm.__file__).parent and "working_dir" not in runtime
    assert {"runs", "data", "**/__pycache__"} <= set(runtime["excludes"])
    installed = jobs.runtime_env(False, str(tmp_path), {})
    assert "py_modules" not in installed and installed["working_dir"] == str(tmp_path.resolve())
    with pytest.raises(SeqlvmError, match="not a folder"):
        jobs.runtime_env(True, "/no/such/folder", {})


def test_jobs_api_addresses(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.jobs_address(None) == jobs.DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert jobs.jobs_address(None) == "http://head:8265"
    with pytest.raises(SeqlvmError, match="needs the dashboard's http address"):
        jobs.jobs_address("head:6379")


def test_tracking_uris_with_passwords_are_refused_and_redacted(tmp_path):
    assert tracking.redact("https://u:pw@host/x") == "https://u:***@host/x"
    assert tracking.redact("http://host:5000") == "http://host:5000"
    with pytest.raises(SeqlvmError, match="carries a password"):
        tracking.resolve_tracking_uri("http://u:pw@host:5000", tmp_path)


def test_an_unreachable_cluster_is_a_one_line_error(capsys):
    assert cli.main(["jobs", "list", "--address", "http://127.0.0.1:1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cannot reach the Ray Jobs API at http://127.0.0.1:1" in error[0]
