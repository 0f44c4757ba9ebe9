"""Piano rolls from the SRNN authors' npz files (real JSB Chorales in ../shared/data/midi) and frame batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.midi import KEYS, read_npz_rolls
from pipelines.stream import collate_frames
from seqlvm.errors import SeqlvmError

JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "midi" / "jsb_raw_batchsize16_seqlen100.npz"


@pytest.mark.skipif(not JSB.exists(), reason="the shared JSB npz is not on this machine")
def test_jsb_npz_gives_binary_rolls_with_test_lengths_from_the_mask():
    splits = read_npz_rolls(JSB)
    assert {k: len(v) for k, v in splits.items()} == {"train": 272, "valid": 80, "test": 77}
    raw = np.load(JSB)
    lengths = [len(r) for r in splits["test"]]
    assert lengths == raw["mask_test"].sum(1).astype(int).tolist() and len(set(lengths)) > 1
    assert all(r.shape[1] == KEYS and set(np.unique(r)) <= {0.0, 1.0} for r in splits["train"][:20])


def test_bad_npz_files_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SeqlvmError, match="broken.npz: not a readable npz"):
        read_npz_rolls(broken)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 5, KEYS)))
    with pytest.raises(SeqlvmError, match="partial.npz: no x_valid array"):
        read_npz_rolls(partial)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=np.zeros((2, 5, 12)), x_valid=np.zeros((2, 5, 12)), x_test=np.zeros((2, 5, 12)))
    with pytest.raises(SeqlvmError, match="expected \\(sequences, steps, 88\\)"):
        read_npz_rolls(wrong)


def test_collate_frames_pads_with_zeros_and_keeps_lengths():
    rolls = [np.ones((3, 4)), np.full((5, 4), 2.0)]
    batch = collate_frames(rolls)
    assert batch["frames"].shape == (2, 5, 4) and batch["lengths"].tolist() == [3, 5]
    assert batch["frames"][0, 3:].abs().sum() == 0 and batch["frames"][1].eq(2.0).all()
