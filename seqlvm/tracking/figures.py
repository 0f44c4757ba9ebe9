"""Figures in MLflow: a training run's learning curves and KL term with its annealing weight, and rendered samples."""
from __future__ import annotations

import tempfile
from pathlib import Path

from seqlvm.tracking.runs import client, metric_history


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


def log_samples(tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str = "samples") -> None:
    """Rendered samples (sound, ink, notes) as artifacts of the model's run."""
    mlflow_client = client(tracking_uri)
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), artifact_path=artifact_path)
