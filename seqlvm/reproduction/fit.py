"""A row's model trained in the row's own process (a Ray worker), its progress sent to the row's MLflow run."""
from __future__ import annotations

import numpy as np

from seqlvm.models import SequenceModel
from seqlvm.reproduction.table import RowRun
from seqlvm.training import TrainConfig, train_locally


def fit(model: SequenceModel, sequences: list[np.ndarray], cfg: TrainConfig, steps: int, work: RowRun) -> dict:
    """Train `model` for `steps` steps on the row's device; the last logged window's metrics. The model is handed
    back on the CPU, where the measuring code runs."""
    metrics = train_locally(model, sequences, cfg, steps, on_log=work.log, device=work.device)
    model.to("cpu")
    work.steps += steps
    return metrics
