"""MLflow runs: the embedded default store (SQLite + a local artifact folder), runs keyed by a stable run name so
that a resumed training run continues the same MLflow run, parameters and metrics logged from the driver."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.errors import SeqlvmError

RUN_NAME_TAG = "seqlvm.run_name"
# The MLflow 3 UIs that read this tag open an experiment without it as a GenAI one (traces, evaluations); 3.17's
# goes by its sidebar switch instead. The value is the UI's "Machine learning" kind (CUSTOM_MODEL_DEVELOPMENT in the
# bundle under mlflow/server/js).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
    """The id of experiment `name`, created if missing, and marked as model training (`EXPERIMENT_KIND`)."""
    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        experiment = _create_experiment(mlflow_client, name, workdir, tracking_uri)
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind a user chose in the UI stays
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _create_experiment(mlflow_client, name: str, workdir: Path, tracking_uri: str):
    artifacts = None
    if tracking_uri.startswith("sqlite:"):
        artifacts = (workdir / "mlartifacts").absolute().as_uri()
    try:
        experiment_id = mlflow_client.create_experiment(name, artifact_location=artifacts,
                                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # another run created it meanwhile (two jobs starting at once on a cluster)
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment
    return mlflow_client.get_experiment(experiment_id)


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


def metric_history(tracking_uri: str, run_id: str, key: str) -> tuple[list[int], list[float]]:
    history = sorted(client(tracking_uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    by_step = {m.step: m.value for m in history}  # a resumed run may re-log a step: keep the latest value
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


PROBE_TIMEOUT_S = 10


def check_reachable(tracking_uri: str) -> None:
    """One line if the tracking store does not answer. A server is probed once first: MLflow's own client retries
    a refused connection with backoff for minutes before it gives up."""
    import logging

    if tracking_uri.startswith(("http://", "https://")):
        probe_server(tracking_uri)
    store_setup = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
    level = store_setup.level
    store_setup.setLevel(logging.WARNING)
    try:
        client(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # connection errors come in many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SeqlvmError(f"MLflow tracking store {tracking_uri} is not reachable ({reason})") from None
    finally:
        store_setup.setLevel(level)


def probe_server(tracking_uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered (an auth proxy may refuse /health): the MLflow client goes on from here
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SeqlvmError(f"MLflow tracking store {tracking_uri} is not reachable ({reason})") from None
