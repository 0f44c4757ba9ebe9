"""Samples of a frame model turned into what a person wants to see and hear: waveforms (PNG + wav), handwriting
(PNG), piano rolls (PNG + MIDI). Each modality's reader module owns its renderer (named in
pipelines/modalities.py); this module draws the samples and hands them to it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipelines.description import DataDescription
from pipelines.handlers import renderer
from seqlvm.models import FrameModel


@torch.no_grad()
def render_prior_samples(model: FrameModel, data: DataDescription, n: int, steps: int | None,
                         out_dir: str | Path, prefix: str = "sample") -> list[Path]:
    """Draw n sequences of `steps` frames (default: the training data's mean length) from the model's prior
    and render each; returns the files written."""
    render, data_info = renderer(data.modality), data.data_info()
    steps = steps or data.mean_steps or 100
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = model.sample_prior(n, steps=steps).cpu().numpy()
    paths: list[Path] = []
    for i, sequence in enumerate(frames):
        paths += render(np.asarray(sequence), data_info, out_dir, f"{prefix}-{i:02d}")
    return paths
