"""MLflow: the embedded default store (SQLite + a local artifact folder), runs keyed by a stable run name so
that a resumed training run continues the same MLflow run, and the figures logged at the end of a run."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from seqlvm.errors import SeqlvmError

RUN_NAME_TAG = "seqlvm.run_name"


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').absolute()}"


def resolve_tracking_uri(cli_value: str | None, workdir: Path) -> str:
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)
    check_no_credentials(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).absolute()}"  # MLflow needs absolute paths
    return uri


def check_no_credentials(uri: str) -> None:
    """A tracking URI travels to workers, job metadata, sweep state files and printed lines, so it must not carry
    a password; MLflow reads credentials from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or a token)."""
    from urllib.parse import urlsplit

    if "://" in uri and urlsplit(uri).password:
        raise SeqlvmError(f"{redact(uri)}: the tracking URI carries a password; set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD in the environment instead")


def redact(uri: str) -> str:
    """The URI with any password replaced by ***, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def client(tracking_uri: str):
    from mlflow import MlflowClient
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, workdir: Path) -> str:
    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri.startswith("sqlite:"):
        artifacts = (workdir / "mlartifacts").absolute().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # another run created it meanwhile (two jobs starting at once on a cluster)
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def start_or_resume_run(tracking_uri: str, experiment_id: str, run_name: str, tags: dict) -> tuple[str, bool]:
    """The MLflow run for a training run name: the existing one (resumed) or a new one. Returns (id, resumed)."""
    mlflow_client = client(tracking_uri)
    found = mlflow_client.search_runs([experiment_id], f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id, True
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    return run.info.run_id, False


def log_params(tracking_uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    existing = client(tracking_uri).get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):
        client(tracking_uri).log_batch(run_id, params=new[i:i + 100])


def flatten(prefix: str, mapping: dict) -> dict:
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out


class MetricLogger:
    """Batched metric logging for one run, from the driver: a failure raises."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client, self.run_id = client(tracking_uri), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)


# MLflow's REST client retries a failed request with exponential backoff for minutes; the outbox retries at the
# next checkpoint instead, so a worker never stalls on a server that is down.
WORKER_HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch call


class MetricOutbox:
    """A training worker's metrics on their way to MLflow. Each keeps the timestamp it was measured at, and MLflow
    stores an identical (key, value, timestamp, step) once, so sending again is harmless: what is undelivered is
    saved in each checkpoint, so a tracking server that is down for a while gets the metrics when it is back. Workers that start at step S (`replay_after=S`: 0 for a fresh start, the
    checkpoint's step after a restart) may be running steps a failed attempt had already delivered: those keep
    their first values and are not sent twice. `add` never talks to the server."""

    def __init__(self, tracking_uri: str, run_id: str, pending: list | None = None, replay_after: int | None = None):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pending: list[list] = [list(m) for m in pending or []]
        self.replay_after = replay_after
        self.delivered_before: set[tuple[str, int]] | None = None  # (key, step) after replay_after, found once
        self.last_error: str | None = None

    def add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending.extend([key, float(value), now, int(step)] for key, value in metrics.items())

    def flush(self) -> bool:
        """Send what is pending; True when nothing is left. A failure keeps the rest for the next flush."""
        from mlflow.entities import Metric
        try:
            mlflow_client = client(self.tracking_uri)
            if self.replay_after is not None and self.delivered_before is None:
                self.delivered_before = self._logged_after(mlflow_client, self.replay_after)
            if self.delivered_before:
                self.pending = [m for m in self.pending if (m[0], m[3]) not in self.delivered_before]
            while self.pending:
                chunk = self.pending[:MLFLOW_BATCH_LIMIT]
                mlflow_client.log_batch(self.run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
                del self.pending[:len(chunk)]
        except Exception as exc:  # connection errors come in many types; the metrics wait for the next try
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return False
        self.last_error = None
        return True

    def _logged_after(self, mlflow_client, step: int) -> set[tuple[str, int]]:
        keys = mlflow_client.get_run(self.run_id).data.metrics
        return {(key, m.step) for key in keys for m in mlflow_client.get_metric_history(self.run_id, key)
                if m.step > step}


def metric_history(tracking_uri: str, run_id: str, key: str) -> tuple[list[int], list[float]]:
    history = sorted(client(tracking_uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    by_step = {m.step: m.value for m in history}  # a resumed run may re-log a step: keep the latest value
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def log_training_figures(tracking_uri: str, run_id: str) -> list[str]:
    """Learning curves (train/valid NLL bound) and KL with its annealing weight, as PNG artifacts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mlflow_client = client(tracking_uri)
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in ("train/nll_bound", "valid/nll_bound"):
            steps, values = metric_history(tracking_uri, run_id, key)
            if steps:
                ax.plot(steps, values, marker="." if key.startswith("valid") else None, label=key)
        ax.set(xlabel="step", ylabel="NLL bound (nats / sentence)", title="Learning curves")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(tmp) / "learning_curves.png", dpi=110)
        plt.close(fig)
        names.append("learning_curves.png")

        steps, kl = metric_history(tracking_uri, run_id, "train/kl")
        w_steps, weight = metric_history(tracking_uri, run_id, "train/kl_weight")
        if steps:
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.plot(steps, kl, color="tab:blue", label="KL (nats / sentence)")
            ax.set(xlabel="step", ylabel="KL term", title="KL term and its annealing weight")
            twin = ax.twinx()
            twin.plot(w_steps, weight, color="tab:orange", label="KL weight")
            twin.set_ylabel("KL weight")
            twin.set_ylim(0, 1.05)
            fig.legend(loc="upper right")
            fig.tight_layout()
            fig.savefig(Path(tmp) / "kl_and_weight.png", dpi=110)
            plt.close(fig)
            names.append("kl_and_weight.png")
        for name in names:
            mlflow_client.log_artifact(run_id, str(Path(tmp) / name), artifact_path="figures")
    return names


def check_reachable(tracking_uri: str) -> None:
    try:
        client(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # connection errors come in many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SeqlvmError(f"MLflow tracking store {tracking_uri} is not reachable ({reason})") from None
