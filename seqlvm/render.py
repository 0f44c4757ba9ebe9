"""Samples of a frame model turned into what a person wants to see and hear: waveforms (PNG + wav), handwriting
(PNG), piano rolls (PNG + MIDI). Each modality's reader module owns its renderer; this module draws the
samples, dispatches on the checkpoint's modality and logs the files to the model's MLflow run."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from seqlvm.errors import SeqlvmError
from seqlvm.models import SequenceModel

RENDERERS = {"audio": "pipelines.audio:render_audio", "strokes": "pipelines.strokes:render_strokes",
             "midi": "pipelines.midi:render_midi"}


def renderer(modality: str):
    try:
        module, function = RENDERERS[modality].split(":")
    except KeyError:
        raise SeqlvmError(f"no renderer for {modality!r} data (renderable: {', '.join(RENDERERS)})") from None
    return getattr(importlib.import_module(module), function)


@torch.no_grad()
def render_prior_samples(model: SequenceModel, data_info: dict, n: int, steps: int | None,
                         out_dir: str | Path, prefix: str = "sample") -> list[Path]:
    """Draw n sequences of `steps` frames (default: the training data's mean length) from the model's prior
    and render each; returns the files written."""
    render = renderer(data_info["modality"])
    steps = steps or int(data_info.get("mean_steps") or 100)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = model.sample_prior(n, steps=steps).cpu().numpy()
    paths: list[Path] = []
    for i, sequence in enumerate(frames):
        paths += render(np.asarray(sequence), data_info, out_dir, f"{prefix}-{i:02d}")
    return paths


def log_samples(tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str = "samples") -> None:
    from seqlvm import tracking

    client = tracking.client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
