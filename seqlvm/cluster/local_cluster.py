"""A real multi-process Ray cluster on one machine, for trying the cluster path locally and for the tests: a head
node and a worker node (`ray start`), and an MLflow tracking server, all bound to 127.0.0.1 on free ports, with
Ray's token authentication on. `seqlvm cluster up|down|status` drives it; its state (ports, PIDs, the token file,
logs, the MLflow store) lives in one folder, and `down` ends exactly the processes `up` started, by PID."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import SeqlvmError

STATE_FILE = "cluster.json"


@dataclass
class ClusterState:
    root: str
    gcs_address: str
    dashboard_url: str
    tracking_uri: str | None
    token_path: str
    ray_temp_dir: str
    pids: dict[str, int] = field(default_factory=dict)

    def client_env(self) -> dict[str, str]:
        """What a client (seqlvm submit, ray job submit, a driver) needs in its environment to use this cluster."""
        env = {"RAY_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_ports() -> list[str]:
    """Each node of a one-machine cluster needs its own agent, manager and metrics ports."""
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [f"{flag}={free_port()}" for flag in flags]


def executable(name: str) -> str:
    """A console script of this Python environment (ray, mlflow), so the cluster runs the same versions."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def wait_until(check, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise SeqlvmError(f"{what} did not start within {timeout:.0f} s (log {log}: {' | '.join(tail)})")


def http_ok(url: str, token_path: str | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth_headers(token_path)),
                                    timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def auth_headers(token_path: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {Path(token_path).read_text()}"} if token_path else {}


def dashboard_json(state: ClusterState, path: str, token: bool = True):
    """A GET on the head's dashboard API (Jobs, State), with the cluster's token unless told otherwise."""
    request = urllib.request.Request(state.dashboard_url + path,
                                     headers=auth_headers(state.token_path if token else None))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in its own session, so `down` can end it together with the processes it spawned. It runs in the
    log's folder (the cluster's): a job without a working dir starts in its node's current folder, which must not
    be a checkout, or `python -m seqlvm.cli` would import that checkout instead of the code the job carries."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=log.parent)


def start_mlflow(root: Path, port: int, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
    """An MLflow tracking server on 127.0.0.1:port: runs in root/mlflow.db, artifacts served from root/mlartifacts
    (clients upload through the server, so workers need no shared disk)."""
    server = start([executable("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                    "--artifacts-destination", str(root / "mlartifacts")], root / "mlflow.log",
                   # MLflow 3's background job runner (GenAI features) adds half a dozen busy processes
                   {**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout, "the MLflow server",
                   root / "mlflow.log")
    except SeqlvmError:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        raise
    return server


def cluster_env(token_path: Path, gcs_address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0",
               # Ray's own helpers (Train's placement-group cleaner) look for "the" Ray on this machine and give up
               # when they find several; this names the right one.
               RAY_ADDRESS=gcs_address,
               # jobs run `python -m seqlvm.cli`: this environment's python, with torch, ray and mlflow
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def up(root: Path, head_cpus: int = 4, worker_cpus: int = 2, mlflow: bool = True, timeout: float = 120) -> ClusterState:
    """Start the head, one worker node and (optionally) MLflow; returns the state, also saved in root."""
    root = Path(root).absolute()
    if (root / STATE_FILE).exists():
        raise SeqlvmError(f"{root}: a local cluster is already up here (`seqlvm cluster down --dir {root}` first)")
    root.mkdir(parents=True, exist_ok=True)
    token_path = root / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    # Ray's Unix sockets live under its temp dir, and socket paths are limited to ~107 bytes: keep it short.
    temp_dir = tempfile.mkdtemp(prefix="seqlvm-ray-")
    gcs_port, dashboard_port, mlflow_port = free_port(), free_port(), free_port()
    state = ClusterState(str(root), f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}",
                         f"http://127.0.0.1:{mlflow_port}" if mlflow else None, str(token_path), temp_dir)
    env = cluster_env(token_path, state.gcs_address)
    if mlflow:  # jobs and workers log here unless a command says otherwise, as on a cluster with its MLflow
        env["MLFLOW_TRACKING_URI"] = state.tracking_uri
    ray = executable("ray")
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    try:
        head = start([ray, "start", "--head", f"--port={gcs_port}", f"--num-cpus={head_cpus}",
                      "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                      f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
                      "--object-store-memory=536870912", *node_ports(), *common], root / "head.log", env)
        state.pids["head"] = head.pid
        wait_until(lambda: http_ok(f"{state.dashboard_url}/api/version", state.token_path), timeout, "the Ray head", root / "head.log")
        worker_cmd = [ray, "start", f"--address={state.gcs_address}", f"--num-cpus={worker_cpus}",
                      "--object-store-memory=268435456", *common]
        state.pids["worker"] = start_worker(worker_cmd, root / "worker.log", env, timeout)
        if mlflow:
            state.pids["mlflow"] = start_mlflow(root, mlflow_port, env, timeout).pid
        wait_until(lambda: alive_nodes(state) >= 2, timeout, "the Ray worker node", root / "worker.log")
    except BaseException:
        stop_processes(state)
        raise
    (root / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    return state


def start_worker(cmd: list[str], log: Path, env: dict[str, str], timeout: float, attempts: int = 3) -> int:
    """A worker node's `ray start`; Ray gives a raylet 30 s to register, which a loaded machine can miss, so a
    start that gave up is tried again."""
    for _ in range(attempts):
        process = start([*cmd, *node_ports()], log, env)
        deadline = time.time() + timeout
        while time.time() < deadline and process.poll() is None and "block forever" not in read_tail(log):
            time.sleep(0.5)
        if process.poll() is None:
            return process.pid
    raise SeqlvmError(f"the Ray worker node did not start after {attempts} attempts (log {log})")


def read_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def alive_nodes(state: ClusterState) -> int:
    """Nodes the head reports alive, through the dashboard's HTTP API (with the token)."""
    try:
        summary = dashboard_json(state, "/nodes?view=summary")["data"]["summary"]
    except (OSError, KeyError, ValueError):
        return 0
    return sum(1 for node in summary if node.get("raylet", {}).get("state") == "ALIVE")


def load(root: Path) -> ClusterState:
    path = Path(root).absolute() / STATE_FILE
    if not path.exists():
        raise SeqlvmError(f"{path.parent}: no local cluster is up here")
    return ClusterState(**json.loads(path.read_text()))


def stop_processes(state: ClusterState, grace: float = 20) -> None:
    """SIGTERM each started process's session (`ray start --block` then stops its node), SIGKILL what remains."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        for pid in state.pids.values():
            try:
                os.killpg(pid, sig)  # each was started as the leader of its own session
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and any(running(p) for p in state.pids.values()):
            time.sleep(0.2)
    for pid in state.pids.values():
        reap(pid)
    shutil.rmtree(state.ray_temp_dir, ignore_errors=True)


def running(pid: int) -> bool:
    """Whether the process is alive: not gone, and not a zombie waiting for a parent that may never reap it."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] != 0:
            return False
    except ChildProcessError:  # not our child (a `down` from another process)
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def down(root: Path) -> ClusterState:
    state = load(root)
    stop_processes(state)
    (Path(state.root) / STATE_FILE).unlink()
    return state
