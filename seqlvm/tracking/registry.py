"""The MLflow model registry: best checkpoints as versions of a registered model (an MLflow pyfunc that
carries the weights and the seqlvm code), the `champion` alias rule, and the list/show/promote/rollback
operations behind `seqlvm registry`."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from seqlvm import package_folders, tracking
from seqlvm.tracking.datasets import corpus_of

CHAMPION = "champion"
# The validation metric versions are compared on, stored as a version tag.
COMPARED_METRIC = "valid.nll_bound"
SHOWN_METRICS = ("valid.nll_bound", "valid.kl", "valid.mutual_info", "valid.active_units", "test.nll_bound",
                 "test.decode_distinct", "test.decode_f1")
HISTORY_TAG = "seqlvm.alias_history"  # JSON {alias: [versions, oldest first]}, for rollback
MODEL_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"


def _signature(text: bool):
    """The pyfunc model's inputs, outputs and parameters (seqlvm/tracking/pyfunc_model.py): columns that only
    some modes read or write are optional."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from seqlvm.operations import DEFAULT_OPTIONS
    kinds = {bool: "boolean", int: "long", float: "double", str: "string"}
    params = ParamSchema([ParamSpec(name, kinds[type(value)], value)
                          for name, value in {"mode": "auto", **DEFAULT_OPTIONS}.items()])
    scores = [ColSpec("double", name, required=False)
              for name in ("elbo", "iw_ll", "elbo_per_step", "iw_ll_per_step", "kl")]
    scores += [ColSpec("long", "samples", required=False)]
    if not text:  # frame models: steps to sample in, or frames (JSON, in the data's units) to score
        return ModelSignature(
            inputs=Schema([ColSpec("long", "steps", required=False), ColSpec("string", "frames", required=False)]),
            outputs=Schema([ColSpec("long", "steps", required=False), ColSpec("string", "frames", required=False),
                            *scores]), params=params)
    return ModelSignature(
        inputs=Schema([ColSpec("string", "sentence")]),
        outputs=Schema([ColSpec("string", "sentence"), *[ColSpec("string", name, required=False)
                                                         for name in ("output", "source", "mean", "variance")],
                        ColSpec("long", "steps", required=False), *scores]), params=params)


def default_registered_name(model_name: str, data_source: str) -> str:
    """One registered model per model family and corpus, e.g. `sentence-vae-shakespeare`."""
    corpus = corpus_of(data_source) or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model_name}-{corpus}").strip("-")


def model_code_paths() -> list[Path]:
    """The folders of the packages a registered model carries."""
    return package_folders("seqlvm", "pipelines")


def check_model_code() -> list[Path]:
    """Copy the model's code as registration will, so that a sweep whose code cannot be packaged fails before it
    trains rather than at its last step. Returns the folders."""
    paths = model_code_paths()
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            try:
                shutil.copytree(path, Path(tmp) / path.name)
            except OSError as exc:
                raise SeqlvmError(f"{path}: a registered model carries this package's code, and it cannot be "
                                  f"copied ({exc})") from None
    return paths


def _weights_only_checkpoint(checkpoint: Path, folder: Path) -> tuple[Path, dict]:
    """A copy of model.pt without the optimiser state: what serving needs, at a third of the size.
    Returns (its path, its payload)."""
    import torch

    from seqlvm.checkpoint import CHECKPOINT_FILE, read_checkpoint
    payload = read_checkpoint(checkpoint)
    payload.pop("optimizer", None)
    path = folder / CHECKPOINT_FILE
    torch.save(payload, path)
    return path, payload


def register_checkpoint(tracking_uri: str, run_id: str, checkpoint: Path, name: str, tags: dict[str, str],
                        manifest: dict) -> str:
    """Log the checkpoint as a pyfunc model in `run_id` and register it as a new version of `name`.
    Returns the version number."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        weights, payload = _weights_only_checkpoint(checkpoint, Path(tmp))
        manifest_path = Path(tmp) / "data_manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2))
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # MLflow asks for an input example; the signature already describes the input.
            warnings.filterwarnings("ignore", message=".*input example.*")
            info = mlflow.pyfunc.log_model(
                # "Models from code": MLflow runs this file on load; no Python object is pickled.
                name="model", python_model=str(MODEL_CODE),
                signature=_signature(text=DataDescription.of_checkpoint(payload).is_text),
                artifacts={"checkpoint": str(weights), "data_manifest": str(manifest_path)},
                # The code travels with the model, so it loads where seqlvm is not installed.
                code_paths=[str(path) for path in model_code_paths()],
                pip_requirements=["torch", "numpy", "pandas", "pyyaml", "pyarrow"],
                registered_model_name=name)
    version = str(info.registered_model_version)
    client = tracking.client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    return version


def _history(client, name: str) -> dict[str, list[str]]:
    return json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "{}"))


def current_alias_version(client, name: str, alias: str = CHAMPION):
    """The ModelVersion holding `alias`, or None."""
    from mlflow.exceptions import MlflowException
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(client, name: str, version: str, alias: str = CHAMPION) -> None:
    """Point `alias` at `version`, remembering the previous holder for `rollback`."""
    client.get_model_version(name, version)  # fails loudly for an unknown version
    history = _history(client, name)
    client.set_registered_model_alias(name, alias, version)
    history.setdefault(alias, []).append(str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def rollback(client, name: str, alias: str = CHAMPION) -> str:
    """Move `alias` back to the version that held it before. Returns that version."""
    history = _history(client, name)
    versions = history.get(alias, [])
    if len(versions) < 2:
        raise SeqlvmError(f"{name}: no earlier {alias} to roll back to")
    versions.pop()
    previous = versions[-1]
    client.set_registered_model_alias(name, alias, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return previous


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str


def promote_if_better(client, name: str, version: str, value: float, fingerprint: str, collapse: str | None = None,
                      champion_collapse: Callable[[dict], str | None] = lambda tags: None) -> PromotionDecision:
    """Give `version` the champion alias only if it beats the current champion like for like: the same compared
    validation metric, measured on the same data (the same manifest fingerprint). A version whose latent is
    unused (`collapse` says why) never becomes champion; one that uses it replaces a champion whose tags
    `champion_collapse` finds collapsed, whatever their bounds."""
    if collapse:
        return PromotionDecision(False, f"its latent is unused ({collapse}); see the collapse guard")
    champion = current_alias_version(client, name)
    if champion is not None:
        if champion.tags.get("seqlvm.data_fingerprint") != fingerprint:
            return PromotionDecision(False, f"the champion (version {champion.version}) was measured on other "
                                            "data; promote by hand if intended")
        if COMPARED_METRIC not in champion.tags:
            return PromotionDecision(False, f"the champion (version {champion.version}) has no {COMPARED_METRIC} "
                                            "to compare with; promote by hand if intended")
        champion_unused = champion_collapse(champion.tags)
        best = float(champion.tags[COMPARED_METRIC])
        if not champion_unused and not value < best:
            return PromotionDecision(False, f"{COMPARED_METRIC} {value:.3f} does not beat the champion's "
                                            f"{best:.3f} (version {champion.version})")
    set_alias(client, name, version)
    if champion is None:
        return PromotionDecision(True, f"{COMPARED_METRIC} {value:.3f}; there was no champion")
    if champion_unused:
        return PromotionDecision(True, f"the champion (version {champion.version}) left its latent unused "
                                       f"({champion_unused})")
    return PromotionDecision(True, f"{COMPARED_METRIC} {value:.3f} beats version {champion.version}")


def split_metrics(tags: dict, split: str) -> dict[str, float]:
    """A version's metrics on one split, from its `SPLIT.NAME` tags."""
    metrics = {}
    for key, value in tags.items():
        if key.startswith(f"{split}."):
            try:
                metrics[key.split(".", 1)[1]] = float(value)
            except ValueError:
                pass
    return metrics


def list_models(client) -> list[dict]:
    rows = []
    for model in client.search_registered_models(order_by=["name ASC"]):
        versions = client.search_model_versions(f"name = '{model.name}'")
        champion = current_alias_version(client, model.name)
        rows.append({"name": model.name, "versions": len(versions),
                     "latest": max((int(v.version) for v in versions), default=0),
                     "champion": champion.version if champion else "",
                     COMPARED_METRIC: champion.tags.get(COMPARED_METRIC, "") if champion else ""})
    return rows


def require_model(client, name: str):
    """The registered model `name`, or a one-line error."""
    from mlflow.exceptions import MlflowException
    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise SeqlvmError(f"no registered model named {name!r}") from None


def show_model(client, name: str) -> list[dict]:
    model = require_model(client, name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        rows.append({"version": v.version, "aliases": ", ".join(aliases.get(str(v.version), [])),
                     "sweep": v.tags.get("seqlvm.sweep", ""),
                     **{k: v.tags.get(k, "") for k in SHOWN_METRICS}})
    return rows
