"""The end of a sweep: its best checkpoint evaluated on the whole validation and test splits, registered as a new
version, and made champion if it beats the current one on the same data."""
from __future__ import annotations

import json
import math
from pathlib import Path

from pipelines.dataset import PreparedDataset
from seqlvm import tracking
from seqlvm.checkpoint import local_copy
from seqlvm.evaluation import CollapseGuard
from seqlvm.tracking import registry
from seqlvm.training import evaluate_checkpoint
from tune.request import SweepRequest, SweepResult


def register_best(request: SweepRequest, result: SweepResult, dataset: PreparedDataset, model_name: str,
                  guard: CollapseGuard, console=None) -> None:
    """Evaluate the best trial's checkpoint on the whole validation and test splits, register it, and move
    the champion alias if it wins. Skipped when a resumed sweep had registered already."""
    client = tracking.client(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    name = request.registered_name or registry.default_registered_name(model_name, dataset.source or "data")
    result.registered_name = name
    if "seqlvm.registered_version" in parent.data.tags:
        result.version = parent.data.tags["seqlvm.registered_version"]
        return
    best = result.best
    checkpoint = Path(local_copy(best["checkpoint_path"], request.storage)) / "model.pt"
    if console:
        console.print(f"evaluating the best trial {best['trial']} on the validation and test splits "
                      f"({request.iw_samples} importance samples)")
    valid = evaluate_checkpoint(str(checkpoint), request.data_dir, "valid", iw_samples=request.iw_samples)
    test = evaluate_checkpoint(str(checkpoint), request.data_dir, "test", iw_samples=request.iw_samples)
    result.test_metrics = test
    tags = {"seqlvm.sweep": result.name, "seqlvm.trial_id": best["trial"], "seqlvm.model": model_name,
            "seqlvm.data_source": dataset.source, "seqlvm.data_fingerprint": dataset.fingerprint,
            "seqlvm.collapse_guard": json.dumps(guard.to_dict()), "seqlvm.params": json.dumps(best["params"]),
            **{f"valid.{k}": _fmt(v) for k, v in valid.items()}, **{f"test.{k}": _fmt(v) for k, v in test.items()}}
    result.version = registry.register_checkpoint(result.tracking_uri, best["run_id"], checkpoint, name, tags,
                                                  dataset.manifest)
    result.decision = registry.promote_if_better(
        client, name, result.version, valid["nll_bound"], dataset.fingerprint, collapse=guard.collapse(valid),
        champion_collapse=lambda tags: guard.collapse(registry.split_metrics(tags, "valid")))
    client.set_tag(result.parent_run_id, "seqlvm.registered_version", result.version)
    client.set_tag(result.parent_run_id, "seqlvm.registered_name", name)
    tracking.MetricLogger(result.tracking_uri, result.parent_run_id).log(
        {**{f"best/valid_{k}": v for k, v in valid.items()}, **{f"best/test_{k}": v for k, v in test.items()}}, 0)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}" if math.isfinite(value) else str(value)

