"""Checkpoints are data: one `model.pt` holding the model's constructor arguments, weights, optimiser state,
run config and vocabulary, loaded with `torch.load(weights_only=True)`. Resolves the forms users pass:
a checkpoint folder, a training-run folder (its latest checkpoint), `runs:/RUN_ID/...` or `models:/...`."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from pipelines.errors import SeqlvmError
from pipelines.vocab import Vocab
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


def resolve_checkpoint(spec: str, tracking_uri: str | None = None) -> Path:
    """Path to a model.pt from a folder, a run folder, or an MLflow `runs:/` / `models:/` URI."""
    if spec.startswith(("runs:/", "models:/")):
        import mlflow

        from seqlvm.tracking import check_reachable, resolve_tracking_uri
        uri = resolve_tracking_uri(tracking_uri, Path("runs"))  # the CLI's default store
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        target = Path(tempfile.mkdtemp(prefix="seqlvm-ckpt-"))
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


def load_model(spec: str, tracking_uri: str | None = None) -> tuple[SequenceModel, Vocab | None, dict]:
    """(model in eval mode, vocabulary (None for a frame model), the whole checkpoint payload)."""
    path = resolve_checkpoint(spec, tracking_uri)
    payload = read_checkpoint(path)
    model = build_model_from_args(payload["model"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    payload["path"] = str(path)
    return model, Vocab(payload["vocab"]) if payload.get("vocab") else None, payload
