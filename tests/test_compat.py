"""Files written before the layering change still work: checkpoints of a text and a frame model written by
`seqlvm train` at that time (`model.pt`: constructor arguments with a frame model's frame size in the
`vocab_size` slot, the run config, the vocabulary or data info) and datasets prepared then (a text dataset whose
manifest counts `sentences` and `tokens`; piano rolls of the JSB slice in tests/fixtures/midi, format
`seqlvm-frames-1`). Each checkpoint's bounds must be the ones the code of that time computed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlvm import generate
from seqlvm.checkpoint import load_model
from seqlvm.training import evaluate_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
TEXT_CHECKPOINT = FIXTURES / "checkpoints" / "sentence-vae.pt"
FRAME_CHECKPOINT = FIXTURES / "checkpoints" / "vrnn.pt"
TEXT_DATA = FIXTURES / "datasets" / "tiny-text"
ROLLS_DATA = FIXTURES / "datasets" / "tiny-rolls"

# `evaluate_checkpoint(CHECKPOINT, DATA, "test", iw_samples=2)` as the code that wrote the fixtures computed it (commit
# dcd3f99, run on the fixtures; it prepared tiny-rolls too): seeded, so the same code gives the same numbers.
THEN = {
    "text": {"nll_bound": 22.117715944846, "kl": 0.024901817242, "iw_nll": 22.027153015137, "sentences": 12},
    "frames": {"nll_bound": 6198.164445877075, "kl": 19.017961502075, "iw_nll": 6194.069824218750, "sequences": 4},
}


def test_a_text_checkpoint_written_before_loads_samples_and_evaluates_as_it_did():
    model, vocab, payload = load_model(str(TEXT_CHECKPOINT))
    assert model.name == "sentence-vae" and model.config.latent_dim == 2 and payload["step"] == 2
    assert len(vocab) == 25 and payload["config"]["train"]["batch_size"] == 8
    torch.manual_seed(0)
    sentences = generate.from_prior(model, vocab, 3, greedy=False, max_len=8)
    assert len(sentences) == 3 and all(set(s.split()) <= set(vocab.words) for s in sentences)
    assert len(generate.reconstruct(model, vocab, ["the cat sat on the mat ."], max_len=8)) == 1
    metrics = evaluate_checkpoint(str(TEXT_CHECKPOINT), str(TEXT_DATA), "test", iw_samples=2)
    for key, then in THEN["text"].items():
        assert metrics[key] == pytest.approx(then, rel=1e-6), key


def test_a_frame_checkpoint_written_before_loads_samples_and_evaluates_as_it_did():
    model, vocab, payload = load_model(str(FRAME_CHECKPOINT))
    assert vocab is None and model.name == "vrnn" and payload["data_info"]["frame_dim"] == 88
    torch.manual_seed(0)
    rolls = model.sample_prior(2, steps=5)
    assert rolls.shape == (2, 5, 88) and set(rolls.unique().tolist()) <= {0.0, 1.0}
    metrics = evaluate_checkpoint(str(FRAME_CHECKPOINT), str(ROLLS_DATA), "test", iw_samples=2)
    for key, then in THEN["frames"].items():
        assert metrics[key] == pytest.approx(then, rel=1e-6), key
