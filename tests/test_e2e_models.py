"""End to end for the models of the later papers, one real corpus each, through the CLI on real Ray and a real
SQLite MLflow store: prepare, train (one Ray Train worker, a few steps), evaluate and sample.

    dssm        character-level English words drawn by wordfreq frequency (Schmidt & Hofmann)
    hybrid-vae  fixed-length character fragments of the built-in Shakespeare plays (Semeniuta et al.)
    nvdm        Shakespeare speeches as bag-of-words documents (Miao et al.)
    nasmc       Bach chorale piano rolls from music21's corpus (Gu et al.)
"""
from __future__ import annotations

import json
import math

import pytest

from pipelines.vocab import UNK
from seqlvm import cli, generate, tracking
from seqlvm.checkpoint import load_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TRAIN = ["train.batch_size=8", "train.log_every=2", "train.eval_every=2", "train.eval_batches=2",
         "train.final_iw_samples=2"]
SPLITS = ["--valid-fraction", "0.2", "--test-fraction", "0.2"]
# model: (prepare modality, source, prepare flags, model overrides)
CASES = {
    "dssm": ("words", "wordfreq:en", ["--vocab-size", "300", "--corpus-tokens", "3000"],
             ["model.state_dim=4", "model.embedding_dim=8", "model.inference_dim=16", "model.flow_hidden=16",
              "model.generative_flow=2xtril", "model.importance_samples=2"]),
    "hybrid-vae": ("text", "builtin:shakespeare", ["--unit", "char", "--fragment-length", "24", "--test-fraction",
                                                   "0.01"],
                   ["model.latent_dim=8", "model.conv_channels=16", "model.max_conv_channels=32",
                    "model.feature_dim=16", "model.lm_hidden=32"]),
    "nvdm": ("text", "builtin:shakespeare", ["--layout", "paragraphs", "--min-length", "20", "--max-length", "300",
                                             "--vocab-size", "1000"],
             ["model.hidden_dim=32", "model.latent_dim=8"]),
    "nasmc": ("midi", "builtin:bach", ["--max-pieces", "16", *SPLITS],
              ["model.hidden_dim=16", "model.latent_dim=4", "model.feature_dim=16", "model.proposal_hidden_dim=16",
               "model.particles=4"]),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("SEQLVM_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, ray_session, cache, tmp_path_factory):
    """(model name, data folder, tracking URI, MLflow run) of a 4-step run."""
    model = request.param
    modality, source, flags, overrides = CASES[model]
    folder = tmp_path_factory.mktemp(model)
    data = folder / "data"
    assert cli.main(["prepare", modality, "--source", source, "--out", str(data), *flags]) == 0
    assert cli.main(["train", "--data", str(data), "--model", model, "--workers", "1", "--max-steps", "4",
                     "--workdir", str(folder / "runs"), "--name", model, *TRAIN, *overrides]) == 0
    uri = tracking.resolve_tracking_uri(None, folder / "runs")
    client = tracking.client(uri)
    run = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id])[0]
    return model, data, uri, run


def test_training_logs_the_bound_and_a_tighter_test_estimate(trained):
    name, _, _, run = trained
    assert run.info.status == "FINISHED" and run.data.tags["seqlvm.model"] == name
    metrics = run.data.metrics
    for key in ("train/nll_bound", "valid/nll_bound", "test/nll_bound", "test/iw_nll"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    # Two importance samples (SMC sweeps for NASMC): tighter than the bound in expectation, so allow noise.
    assert metrics["test/iw_nll"] <= metrics["test/nll_bound"] * 1.05
    if name == "dssm":  # the word task's metrics at the end of training too
        assert metrics["test/xent_test"] > 0 and 0 <= metrics["test/in_vocab"] <= 1


def test_cli_evaluates_and_samples(trained, tmp_path, capsys):
    name, data, uri, run = trained
    checkpoint = f"runs:/{run.info.run_id}/checkpoint"
    capsys.readouterr()
    assert cli.main(["evaluate", checkpoint, "--tracking-uri", uri, "--samples", "3", "--limit", "16",
                     "--word-samples", "2"]) == 0
    table = capsys.readouterr().out
    assert "nll_bound" in table and "iw_nll" in table
    if name == "dssm":  # the word task's own metrics (Schmidt & Hofmann, Table 1)
        assert json.loads((data / "manifest.json").read_text())["task"] == "words"
        assert "xent_train" in table and "in_vocab_unique" in table
    if name == "nasmc":
        assert cli.main(["sample", checkpoint, "--tracking-uri", uri, "--n", "2", "--length", "10",
                         "--out", str(tmp_path), "--no-log"]) == 0
        written = sorted(p.suffix for p in tmp_path.iterdir())
        assert written == [".mid", ".mid", ".png", ".png"]
        return
    assert cli.main(["sample", checkpoint, "--tracking-uri", uri, "--n", "3", "--max-len", "12"]) == 0
    assert "samples from the prior" in capsys.readouterr().out
    loaded = load_model(checkpoint, uri)
    vocab = loaded.data.vocab
    samples = generate.from_prior(loaded.model, loaded.data, 5, greedy=False, max_len=12)
    if name == "nvdm":  # bags of vocabulary words, no order
        assert all(set(s.split()) <= set(vocab.words) and len(s.split()) == 11 for s in samples)  # and </s>
    else:  # character strings: words (dssm) or text fragments (hybrid-vae)
        samples = [s.replace(UNK, "?") for s in samples]  # a barely trained model may emit <unk>
        assert vocab.is_characters and all(len(s) <= 12 and set(s) <= {*vocab.words, "?"} for s in samples)
