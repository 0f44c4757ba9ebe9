"""MLflow: the embedded default store (SQLite + a local artifact folder), runs keyed by a stable run name so
that a resumed training run continues the same MLflow run, and the figures logged at the end of a run."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from seqlvm.errors import SeqlvmError

RUN_NAME_TAG = "seqlvm.run_name"


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').absolute()}"


def resolve_tracking_uri(cli_value: str | None, workdir: Path) -> str:
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).absolute()}"  # MLflow needs absolute paths
    return uri


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
    return mlflow_client.create_experiment(name, artifact_location=artifacts)


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
    """Batched metric logging for one run (used by the rank-0 worker and the driver)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client, self.run_id = client(tracking_uri), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

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
