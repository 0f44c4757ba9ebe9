"""`seqlvm submit` and `seqlvm jobs`: any seqlvm command run on a Ray cluster as a Ray job, through the Jobs API
of the head's dashboard. The job carries the project's code (the packages this seqlvm runs from, or none: the
version installed in the cluster's image) and the settings it needs (the MLflow tracking URI); secrets stay out
of it, because a job's runtime environment is shown to anyone who can list jobs."""
from __future__ import annotations

import os
import re
import shlex
import sys
import time
import uuid
from pathlib import Path

from pipelines.errors import SeqlvmError
from seqlvm import package_folders
from seqlvm.cluster.ray_runtime import QUIET_ENV

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Left out of what is uploaded: outputs, data, caches (Ray caps a package at 100 MiB).
EXCLUDES = ["runs", "data", "benchmarks/out", "**/__pycache__", "*.egg-info", ".pytest_cache", "mlruns",
            "mlartifacts", "*.db"]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)


class JobFailed(SeqlvmError):
    exit_code = 1


def jobs_address(address: str | None) -> str:
    """The Jobs API address: --address, else RAY_ADDRESS when it is an http(s) URL, else the local default."""
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if not address.startswith(("http://", "https://")):
        raise SeqlvmError(f"{address}: the Jobs API needs the dashboard's http address, e.g. {DEFAULT_ADDRESS} "
                          "(a GCS address such as HOST:6379 is for ray.init)")
    return address


def connect(address: str | None):
    from ray.job_submission import JobSubmissionClient

    address = jobs_address(address)
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection, HTTP and authentication errors come in several types
        raise SeqlvmError(f"cannot reach the Ray Jobs API at {address} ({one_line(exc)}){auth_hint(exc)}") from None


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def auth_hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "401" in text or "403" in text or "unauthenticated" in text or "authentication" in text:
        return ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH "
                "(or RAY_AUTH_TOKEN)")
    return ""


def entrypoint_of(command: list[str]) -> str:
    """The job's shell command: `seqlvm ...` runs as `python -m seqlvm.cli ...` with the cluster's python, which
    finds the shipped packages first on its path."""
    if not command:
        raise SeqlvmError("nothing to submit: put the command after --, e.g. seqlvm submit -- seqlvm tune --data D")
    if command[0] == "seqlvm":
        command = ["python", "-m", "seqlvm.cli", *command[1:]]
    return shlex.join(command)


def code_packages() -> list[str]:
    """The folders of the packages this seqlvm runs from: shipped with a job as Ray `py_modules`, so the code that
    runs on the cluster is this code."""
    return [str(folder) for folder in package_folders("seqlvm", "pipelines", "tune")]  # tune found, not imported


def job_env(tracking_uri: str | None, extra: list[str]) -> dict[str, str]:
    """Environment variables for the job: quiet Ray settings, --tracking-uri, and --env KEY=VALUE pairs, none of
    which may be a secret. This machine's MLFLOW_TRACKING_URI is not passed on: the cluster's nodes know their
    MLflow (often by another address than the port-forward a laptop uses)."""
    from seqlvm.tracking import check_no_credentials

    env = dict(QUIET_ENV)
    if tracking_uri:
        check_no_credentials(tracking_uri)
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SeqlvmError(f"--env {pair}: expected KEY=VALUE")
        if SECRET_NAME.search(key):
            raise SeqlvmError(f"--env {key}: looks like a secret, and a job's environment is shown to anyone who can "
                              "list jobs; give it to the cluster's nodes instead (a Kubernetes Secret, the nodes' "
                              "environment)")
        env[key] = value
    return env


def runtime_env(ship_code: bool, working_dir: str | None, env: dict[str, str]) -> dict:
    """The code goes as `py_modules`, not as the job's working dir: Ray (2.60) can delete a job's working dir while
    the job runs (at the end of a Tune sweep the driver's cwd vanished; ray-project/ray#52343)."""
    result: dict = {"env_vars": env, "excludes": EXCLUDES}
    if ship_code:
        result["py_modules"] = code_packages()
    if working_dir:
        if not Path(working_dir).is_dir():
            raise SeqlvmError(f"{working_dir}: --working-dir is not a folder")
        result["working_dir"] = str(Path(working_dir).resolve())
    return result


def submit(command: list[str], address: str | None = None, ship_code: bool = True, working_dir: str | None = None,
           tracking_uri: str | None = None, env: list[str] = (), submission_id: str | None = None) -> str:
    entrypoint = entrypoint_of(command)
    runtime = runtime_env(ship_code, working_dir, job_env(tracking_uri, list(env)))
    name = command[1] if command[0] == "seqlvm" and len(command) > 1 else Path(command[0]).name
    submission_id = submission_id or f"seqlvm-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    client = connect(address)
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=runtime, submission_id=submission_id,
                                 metadata={"seqlvm.command": shlex.join(command)[:500]})
    except Exception as exc:
        raise SeqlvmError(f"the cluster at {jobs_address(address)} refused the job ({one_line(exc)})"
                          f"{auth_hint(exc)}") from None


def call(address: str | None, method: str, job_id: str | None = None):
    """One Jobs API call with one-line errors (an unknown job id, an unreachable cluster)."""
    client = connect(address)
    try:
        return getattr(client, method)(job_id) if job_id is not None else getattr(client, method)()
    except Exception as exc:
        about = f"job {job_id}" if job_id else jobs_address(address)
        raise SeqlvmError(f"{about}: {one_line(exc)}{auth_hint(exc)}") from None


def wait(job_id: str, address: str | None = None, timeout: float | None = None, poll: float = 2.0) -> str:
    """Block until the job ends; returns its final status."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        status = str(call(address, "get_job_status", job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.time() > deadline:
            raise SeqlvmError(f"job {job_id}: still {status} after {timeout:.0f} s")
        time.sleep(poll)


def follow(job_id: str, address: str | None = None, out=sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    import asyncio

    async def tail() -> None:
        async for lines in connect(address).tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as exc:  # the log stream can drop (a restarted head); the status is still there
        out.write(f"log stream ended: {one_line(exc)}\n")
    return wait(job_id, address)
