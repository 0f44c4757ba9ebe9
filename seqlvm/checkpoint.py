"""Checkpoints are data: one `model.pt` holding the model's constructor arguments, weights, optimiser state,
run config and the description of its data (`DataDescription`), loaded with `torch.load(weights_only=True)`.
Resolves the forms users pass: a checkpoint folder, a training-run folder (its latest checkpoint),
`runs:/RUN_ID/...` or `models:/...`."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.errors import SeqlvmError
from pipelines.description import DataDescription
from seqlvm.models import SequenceModel, build_model_from_args

CHECKPOINT_FILE = "model.pt"


def save_checkpoint(directory: Path, model: SequenceModel, **state) -> Path:
    """Write model.pt into `directory`. `state` holds plain data (optimizer state, step, config, vocab...)."""
    payload = {"model": model.constructor_args(), "state_dict": model.state_dict(), **state}
    path = Path(directory) / CHECKPOINT_FILE
    torch.save(payload, path)
    return path


def _latest_under(folder: Path) -> Path | None:
    candidates = sorted(folder.glob(f"**/{CHECKPOINT_FILE}"), key=lambda p: (p.parent.name, p.stat().st_mtime))
    return candidates[-1] if candidates else None


def resolve_checkpoint(spec: str, tracking_uri: str | None = None, download_to: Path | None = None) -> Path:
    """Path to a model.pt from a folder, a run folder, or an MLflow `runs:/` / `models:/` URI (downloaded into
    `download_to`, by default a new temporary folder that outlives the call)."""
    if spec.startswith(("runs:/", "models:/")):
        import mlflow

        from seqlvm.tracking import check_reachable, resolve_tracking_uri
        uri = resolve_tracking_uri(tracking_uri, Path("runs"))  # the CLI's default store
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        target = download_to or Path(tempfile.mkdtemp(prefix="seqlvm-ckpt-"))
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(target)))
        except Exception as exc:  # MLflow raises several types for unknown runs, models and paths
            raise SeqlvmError(f"{spec}: cannot download from MLflow ({str(exc).splitlines()[0]})") from None
        found = local if local.is_file() else _latest_under(local)
        if found is None:
            raise SeqlvmError(f"{spec}: holds no {CHECKPOINT_FILE}")
        return found
    path = Path(spec)
    if path.is_file():
        return path
    if not path.exists():
        raise SeqlvmError(f"{spec}: no such checkpoint, run folder or MLflow URI")
    found = path / CHECKPOINT_FILE if (path / CHECKPOINT_FILE).exists() else _latest_under(path)
    if found is None:
        raise SeqlvmError(f"{spec}: folder holds no {CHECKPOINT_FILE}")
    return found


def local_copy(checkpoint_path: str, storage: str | None) -> str:
    """A checkpoint folder readable here. Ray Train reports checkpoints in remote storage (`--storage s3://...`)
    as paths inside that filesystem; those are downloaded to a temporary folder."""
    if not storage or "://" not in storage or storage.startswith("file://"):
        return checkpoint_path
    import pyarrow.fs

    filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage)
    target = tempfile.mkdtemp(prefix="seqlvm-ckpt-")
    pyarrow.fs.copy_files(checkpoint_path, target, source_filesystem=filesystem)
    return target


def read_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and why, in one line
        raise SeqlvmError(f"{path}: not a loadable seqlvm checkpoint ({str(exc).splitlines()[0]})") from None


@dataclass
class LoadedModel:
    model: SequenceModel  # in eval mode
    data: DataDescription  # how inputs become its tensors and back
    payload: dict  # the whole checkpoint, with its `path`

    @property
    def is_text(self) -> bool:
        return self.data.is_text


def load_model(spec: str, tracking_uri: str | None = None) -> LoadedModel:
    with tempfile.TemporaryDirectory(prefix="seqlvm-ckpt-") as downloads:  # a URI's copy goes once it is read
        path = resolve_checkpoint(spec, tracking_uri, Path(downloads))
        payload = read_checkpoint(path)
    payload["path"] = spec if spec.startswith(("runs:/", "models:/")) else str(path)
    data = DataDescription.of_checkpoint(payload)
    model = build_model_from_args(payload["model"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return LoadedModel(model, data, payload)
