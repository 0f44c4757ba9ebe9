"""Three tables of `seqlvm reproduce` on tiny settings, without Ray: `hybrid` (Semeniuta et al.'s KL by alpha),
`nasmc-ssm` (NASMC against the bootstrap filter on the nonlinear state-space model, with that model's grid filter
against direct quadrature) and `nvdm` (document perplexity against a unigram model); each table's checks on
hand-made lines."""
from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import integrate

from pipelines.dataset import PreparedDataset
from pipelines.vocab import SPECIALS, UNK_ID
from seqlvm.reproduction.nonlinear_ssm import grid_log_likelihood, particle_filter, simulate
from seqlvm.reproduction.table import Line, Row, RowRun
from seqlvm.reproduction.tables import hybrid, nasmc_ssm, nvdm

WORDS = "the king lord love war crown sword heart night day death blood honour queen grace fair sweet".split()


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    """A small corpus of blank-line-separated speeches in place of the built-in plays (which take ~20 s to
    prepare): each speech leans on one of four topics."""
    rng = random.Random(0)
    speeches = []
    for i in range(300):
        topic = WORDS[(i % 4) * 4:(i % 4) * 4 + 4]
        speeches.append(" ".join(rng.choice(topic + WORDS) for _ in range(rng.randint(25, 60))))
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text("\n\n".join(speeches) + "\n")
    return str(path)


def tiny(row: Row, **settings) -> Row:
    return Row(row.table, row.name, {**row.settings, **settings}, row.data)


def finite(lines: list[Line]) -> bool:
    return all(line.ours is not None and math.isfinite(line.ours) for line in lines)


# ------------------------------------------------------------------------------------------------ hybrid

def test_the_hybrid_rows_are_the_four_variants_on_prepared_fragments(plays, tmp_path, monkeypatch):
    monkeypatch.setattr(hybrid, "SOURCE", plays)
    rows = hybrid.TABLE.rows("quick", None, tmp_path)
    assert [row.name for row in rows] == ["LSTM VAE p=0.2", "hybrid alpha=0", "hybrid alpha=0.2", "hybrid alpha=0.5"]
    assert [row.settings["alpha"] for row in rows] == [None, 0.0, 0.2, 0.5]
    dataset = PreparedDataset.open(rows[0].data.path)
    assert rows[0].data.fingerprint == dataset.fingerprint and rows[0].data.path.startswith(str(tmp_path))
    assert {len(fragment) for fragment in dataset.read("train", 50)} == {hybrid.FRAGMENT}
    assert hybrid.TABLE.rows("paper", None, tmp_path)[0].settings["steps"] > rows[0].settings["steps"]

    lstm_vae, *hybrids = (hybrid.build(row, len(dataset.vocab)) for row in rows)
    assert lstm_vae.name == "sentence-vae" and lstm_vae.config.word_keep_rate == pytest.approx(0.8)
    assert [(m.name, m.config.aux_weight, m.config.max_length) for m in hybrids] == [
        ("hybrid-vae", alpha, hybrid.FRAGMENT) for alpha in (0.0, 0.2, 0.5)]


@pytest.mark.parametrize("variant", [0, 2])
def test_a_hybrid_row_trains_and_reports_its_bound_in_bits_per_character(plays, tmp_path, monkeypatch, variant):
    monkeypatch.setattr(hybrid, "SOURCE", plays)
    row = tiny(hybrid.TABLE.rows("quick", None, tmp_path)[variant], steps=4, train_limit=64, valid_limit=16,
               iw_samples=2)
    logged = []
    work = RowRun("quick", tmp_path, log=lambda step, metrics: logged.append(step))
    lines = hybrid.TABLE.run(row, work)
    assert [(line.label, line.metric) for line in lines] == [(row.name, m) for m in hybrid.METRICS.values()]
    assert finite(lines) and work.steps == 4 and logged
    assert all(line.paper is None and not line.comparable and "no numbers" in line.basis for line in lines)
    recon, kl, bound, iw, active = (line.ours for line in lines)
    assert 0 < recon < 8 and kl >= 0 and bound == pytest.approx(recon + kl)  # 58 symbols: under 6 bits untrained
    assert 0 < iw < 8 and active == int(active)
    assert hybrid.TABLE.run(row, RowRun("quick", tmp_path)) == lines  # deterministic given the seed


def test_bits_per_character_divide_by_the_characters_and_their_end():
    nats = 61 * math.log(2)  # one bit for each of 60 characters and </s>
    measured = hybrid.bits_per_character({"sentences": 2.0, "tokens": 122.0, "recon": nats, "kl": 0.0,
                                          "nll_bound": nats, "iw_nll": nats / 2, "active_units": 3})
    assert (measured["recon"], measured["iw_nll"], measured["active_units"]) == (pytest.approx(1.0),
                                                                               pytest.approx(0.5), 3)


def hybrid_lines(kls: tuple[float | None, ...]) -> list[Line]:
    names = (hybrid.LSTM_VAE, hybrid.ALPHA_0, hybrid.ALPHA_02, hybrid.ALPHA_LARGE)
    return [Line(name, hybrid.METRICS["kl"], kl, None, False, "") for name, kl in zip(names, kls) if kl is not None]


@pytest.mark.parametrize("kls, expected", [
    ((0.001, 0.002, 0.2, 0.5), [True, True]),
    ((0.001, 0.3, 0.2, 0.5), [False, True]),  # alpha=0 kept more than alpha=0.2
    ((0.001, 0.002, 0.0005, 0.5), [False, True]),  # alpha=0.2 collapsed
    ((0.001, 0.002, 0.5, 0.2), [True, False]),  # the larger alpha kept less
    ((None, 0.002, 0.2, 0.5), [False, True]),  # a failed row
])
def test_the_hybrid_checks(kls, expected):
    assert [check.holds for check in hybrid.checks(hybrid_lines(kls))] == expected


# ------------------------------------------------------------------------------------- the nonlinear SSM

def normal(x: float, mean: float, var: float) -> float:
    return math.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def two_steps(x2: float, x1: float, y1: float, y2: float) -> float:
    """p(x_1, x_2, y_1, y_2) of the model, written out."""
    mean = x1 / 2 + 25 * x1 / (1 + x1 ** 2) + 8 * math.cos(1.2 * 2)
    return normal(x1, 0, 5) * normal(y1, x1 ** 2 / 20, 1) * normal(x2, mean, 10) * normal(y2, x2 ** 2 / 20, 1)


def test_the_grid_log_likelihood_matches_direct_quadrature_over_two_steps():
    observed = [(1.5, 4.0), (0.2, 9.0)]
    exact = [math.log(integrate.dblquad(two_steps, -30, 30, -40, 40, args=ys, epsabs=0, epsrel=1e-7)[0])
             for ys in observed]
    y = torch.tensor(observed)[..., None]
    assert grid_log_likelihood(y).tolist() == pytest.approx(exact, abs=1e-4)
    first = [math.log(integrate.quad(lambda x, y1=y1: normal(x, 0, 5) * normal(y1, x ** 2 / 20, 1), -30, 30,
                                     epsabs=0)[0]) for y1, _ in observed]
    assert grid_log_likelihood(y[:, :1]).tolist() == pytest.approx(first, abs=1e-6)


def test_many_particles_of_the_bootstrap_filter_find_the_grid_log_likelihood():
    y = simulate(3, 8, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    runs = particle_filter(y.repeat(8, 1, 1), 5000, None).log_marginal.double().view(8, 3)
    assert runs.mean(0).tolist() == pytest.approx(grid_log_likelihood(y).tolist(), abs=0.2)


def test_simulation_is_reproducible_from_its_generator():
    first, second = (simulate(4, 6, torch.Generator().manual_seed(3)) for _ in range(2))
    assert first.shape == (4, 6, 1) and torch.equal(first, second)


NASMC_TINY = {"iterations": 3, "particles": [5, 20], "test_sequences": 2, "runs": 3, "steps": 10, "batch_size": 4,
              "train_particles": 5}


def test_the_nasmc_row_trains_the_proposal_and_measures_both_filters(tmp_path):
    (row,) = nasmc_ssm.TABLE.rows("quick", None, tmp_path)
    assert row.data is None and row.settings["particles"] == [10, 100]
    assert nasmc_ssm.TABLE.rows("paper", None, tmp_path)[0].settings["particles"] == [10, 100, 1000]
    row = tiny(row, **NASMC_TINY)
    logged = []
    work = RowRun("quick", tmp_path, log=lambda step, metrics: logged.append((step, metrics)))
    lines = nasmc_ssm.TABLE.run(row, work)
    metrics = (nasmc_ssm.ERROR, nasmc_ssm.SPREAD, nasmc_ssm.ESS)
    assert [(line.label, line.metric) for line in lines] == [
        (f"{name}, {particles} particles", metric) for particles in (5, 20) for name in ("bootstrap", "NASMC")
        for metric in metrics]
    assert finite(lines) and all(line.paper is None and not line.comparable and line.basis for line in lines)
    by = {(line.label, line.metric): line.ours for line in lines}
    assert all(by[label, nasmc_ssm.SPREAD] > 0 and 0 < by[label, nasmc_ssm.ESS] <= 1 for label, _ in by)
    assert work.steps == 3 and [step for step, _ in logged] == [1, 2, 3]
    assert nasmc_ssm.TABLE.run(row, RowRun("quick", tmp_path)) == lines  # deterministic given the seed


def nasmc_lines(values: dict[str, tuple[float, float]]) -> list[Line]:
    """label -> (mean log p^ - log p, ESS/P)."""
    return [Line(label, metric, number, None, False, "") for label, pair in values.items()
            for metric, number in zip((nasmc_ssm.ERROR, nasmc_ssm.ESS), pair)]


@pytest.mark.parametrize("values, expected", [
    ({"bootstrap, 10 particles": (-50.0, 0.3), "NASMC, 10 particles": (-5.0, 0.6),
      "bootstrap, 100 particles": (-2.0, 0.3), "NASMC, 100 particles": (0.5, 0.5)}, [True, True, True, True]),
    ({"bootstrap, 10 particles": (-5.0, 0.3), "NASMC, 10 particles": (-50.0, 0.2),  # NASMC worse
      "bootstrap, 100 particles": (-2.0, 0.3), "NASMC, 100 particles": (3.0, 0.5)}, [False, False, False, True]),
    ({"bootstrap, 10 particles": (-50.0, 0.3)}, [False, False]),  # NASMC's lines missing
    ({}, [False] * 2 * len(nasmc_ssm.BUDGETS["quick"]["particles"])),  # the row failed: still reported
])
def test_the_nasmc_checks_compare_the_filters_at_each_particle_count(values, expected):
    checks = nasmc_ssm.checks(nasmc_lines(values))
    assert [check.holds for check in checks] == expected


# -------------------------------------------------------------------------------------------------- NVDM

def test_the_nvdm_rows_and_the_unigram_perplexity_computed_by_hand(plays, tmp_path, monkeypatch):
    monkeypatch.setattr(nvdm, "SOURCE", plays)
    rows = nvdm.TABLE.rows("quick", None, tmp_path)
    assert [(row.name, row.settings.get("latent_dim")) for row in rows] == [
        ("unigram", None), ("NVDM 50", 50), ("NVDM 200", 200)]
    dataset = PreparedDataset.open(rows[0].data.path)
    assert rows[0].data.fingerprint == dataset.fingerprint

    lines = nvdm.TABLE.run(rows[0], RowRun("quick", tmp_path))
    assert [(line.label, line.metric, line.paper, line.comparable) for line in lines] == [
        ("unigram", nvdm.BOUND, None, False), ("unigram", nvdm.IW, None, False)]
    words = range(len(SPECIALS), len(dataset.vocab))  # every word but <pad>, <unk>, <s> and </s>
    counts = Counter(int(i) for document in dataset.read("train") for i in document)
    total = sum(counts[w] + 1 for w in words)
    per_word = []
    for document in dataset.read("test"):
        kept = [int(i) for i in document if int(i) in words]
        per_word.append(-sum(math.log((counts[w] + 1) / total) for w in kept) / len(kept))
    assert UNK_ID not in words and lines[0].ours == lines[1].ours == pytest.approx(math.exp(np.mean(per_word)))


def test_an_nvdm_row_reports_the_bound_beside_the_paper_s_20news_value(plays, tmp_path, monkeypatch):
    monkeypatch.setattr(nvdm, "SOURCE", plays)
    row = tiny(nvdm.TABLE.rows("quick", None, tmp_path)[1], steps=3, hidden_dim=16, bound_samples=2, iw_samples=2)
    work = RowRun("quick", tmp_path)
    lines = nvdm.TABLE.run(row, work)
    assert [(line.label, line.metric, line.paper, line.comparable) for line in lines] == [
        ("NVDM 50", nvdm.BOUND, 836, False), ("NVDM 50", nvdm.IW, None, False)]
    assert "20News" in lines[0].basis and "563" in lines[0].basis
    assert finite(lines) and all(1 < line.ours < len(WORDS) * 4 for line in lines) and work.steps == 3


def test_per_document_perplexity_averages_per_word_log_likelihoods_and_skips_empty_documents():
    nll, words = np.array([2.0, 12.0, 5.0]), np.array([1.0, 3.0, 0.0])
    assert nvdm.per_document_perplexity(nll, words) == pytest.approx(math.exp((2.0 + 4.0) / 2))


@pytest.mark.parametrize("perplexities, expected", [
    ({"unigram": 260.0, "NVDM 50": 240.0, "NVDM 200": 255.0}, [True, True]),
    ({"unigram": 260.0, "NVDM 50": 240.0, "NVDM 200": 270.0}, [True, False]),
    ({"NVDM 50": 240.0, "NVDM 200": 255.0}, [False, False]),  # the unigram row failed
])
def test_the_nvdm_checks_ask_for_a_lower_bound_perplexity_than_the_unigram(perplexities, expected):
    lines = [Line(name, nvdm.BOUND, number, None, False, "") for name, number in perplexities.items()]
    assert [check.holds for check in nvdm.checks(lines)] == expected
