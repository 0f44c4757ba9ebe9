"""The kinds of data, in one place: for each modality, whether it is frames and the output distribution frame models
use for it by default. (What prepares and renders each kind is in `pipelines.handlers`; which models read a modality
is declared by each model, as its `modalities`.)"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str
    frames: bool
    output: str | None = None  # the output head frame models use unless the config says otherwise


MODALITIES = {m.name: m for m in (
    Modality("text", frames=False),
    Modality("audio", frames=True, output="gauss"),
    Modality("strokes", frames=True, output="strokes"),
    Modality("midi", frames=True, output="bernoulli"),
)}
FRAME_MODALITIES = tuple(name for name, modality in MODALITIES.items() if modality.frames)
