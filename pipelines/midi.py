"""Polyphonic music as 88-key binary piano rolls (MIDI notes 21..108), one (T, 88) float32 array per sequence.

So far: the npz format of the SRNN authors' JSB Chorales / Nottingham files (`x_train`, `x_valid`, `x_test` with
`mask_test` giving the test lengths). MIDI files, the Boulanger-Lewandowski pickle and music21's corpus come
with `seqlvm prepare midi` (issue 4).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from seqlvm.errors import SeqlvmError

KEYS = 88
NPZ_SPLITS = {"train": "x_train", "valid": "x_valid", "test": "x_test"}


def read_npz_rolls(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{split: [roll (T, 88)]} from an npz of padded roll arrays; the test split is cut to `mask_test`."""
    path = Path(path)
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise SeqlvmError(f"{path}: not a readable npz file ({exc})") from None
    missing = [key for key in NPZ_SPLITS.values() if key not in data.files]
    if missing:
        raise SeqlvmError(f"{path}: no {missing[0]} array (expected {', '.join(NPZ_SPLITS.values())})")
    splits = {}
    for split, key in NPZ_SPLITS.items():
        rolls = data[key].astype(np.float32)
        if rolls.ndim != 3 or rolls.shape[2] != KEYS:
            raise SeqlvmError(f"{path}: {key} has shape {rolls.shape}, expected (sequences, steps, {KEYS})")
        lengths = (data["mask_test"].sum(1).astype(int) if split == "test" and "mask_test" in data.files
                   else np.full(len(rolls), rolls.shape[1]))
        splits[split] = [roll[:n] for roll, n in zip(rolls, lengths)]
    return splits
