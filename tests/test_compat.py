"""Files written before the layering change still work: checkpoints of a text and a frame model written by
`seqlvm train` at that time (`model.pt`: constructor arguments with a frame model's frame size in the
`vocab_size` slot, the run config, the vocabulary or data info) and a text dataset prepared then (its manifest
counts `sentences` and `tokens`)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from seqlvm import generate
from seqlvm.checkpoint import load_model
from seqlvm.training import evaluate_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
TEXT_CHECKPOINT = FIXTURES / "checkpoints" / "sentence-vae.pt"
FRAME_CHECKPOINT = FIXTURES / "checkpoints" / "vrnn.pt"
TEXT_DATA = FIXTURES / "datasets" / "tiny-text"


def test_a_text_checkpoint_written_before_loads_samples_and_evaluates():
    model, vocab, payload = load_model(str(TEXT_CHECKPOINT))
    assert model.name == "sentence-vae" and model.config.latent_dim == 2 and payload["step"] == 2
    assert len(vocab) == 25 and payload["config"]["train"]["batch_size"] == 8
    torch.manual_seed(0)
    sentences = generate.from_prior(model, vocab, 3, greedy=False, max_len=8)
    assert len(sentences) == 3 and all(set(s.split()) <= set(vocab.words) for s in sentences)
    assert len(generate.reconstruct(model, vocab, ["the cat sat on the mat ."], max_len=8)) == 1
    metrics = evaluate_checkpoint(str(TEXT_CHECKPOINT), str(TEXT_DATA), "test", iw_samples=2)
    assert math.isfinite(metrics["nll_bound"]) and metrics["nll_bound"] > 0 and metrics["sentences"] == 12


def test_a_frame_checkpoint_written_before_loads_and_samples_piano_rolls():
    model, vocab, payload = load_model(str(FRAME_CHECKPOINT))
    assert vocab is None and model.name == "vrnn" and payload["data_info"]["frame_dim"] == 88
    torch.manual_seed(0)
    rolls = model.sample_prior(2, steps=5)
    assert rolls.shape == (2, 5, 88) and set(rolls.unique().tolist()) <= {0.0, 1.0}
