"""Frames rendered as the files a person opens (speech: wav and a waveform PNG; handwriting: PNG; piano rolls: PNG
and MIDI), by the modality's own renderer, returned inside a JSON answer as base64."""
from __future__ import annotations

import base64
import mimetypes
import tempfile
from pathlib import Path

import numpy as np

from pipelines.description import DataDescription
from pipelines.handlers import renderer

MEDIA_TYPES = {".wav": "audio/wav", ".mid": "audio/midi", ".png": "image/png"}


def rendered_files(sequences: list[np.ndarray], data: DataDescription, prefix: str = "sample") -> list[dict]:
    """Each sequence (frames in the data's units) rendered; the files of all of them in order, as
    {name, media_type, base64}."""
    render, info = renderer(data.modality), data.data_info()
    files = []
    with tempfile.TemporaryDirectory(prefix="seqlvm-render-") as folder:
        for i, sequence in enumerate(sequences):
            # The renderers read the model's standardised frames and undo the standardisation themselves.
            for path in render(data.standardised(sequence), info, Path(folder), f"{prefix}-{i:02d}"):
                files.append({"name": path.name, "base64": base64.b64encode(path.read_bytes()).decode("ascii"),
                              "media_type": MEDIA_TYPES.get(path.suffix)
                              or mimetypes.guess_type(path.name)[0] or "application/octet-stream"})
    return files
