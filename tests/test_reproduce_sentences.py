"""The sentence-VAE reproductions: Bowman et al.'s KL collapse table (`collapse`) and Kruengkrai's hidden-state
averaging (`avg`): their rows for both budgets, their runners on tiny settings, and their checks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from pipelines.dataset import PreparedDataset
from pipelines.vocab import BOS_ID, PAD_ID, UNK_ID
from seqlvm.models import build_model
from seqlvm.objectives import kl_weight
from seqlvm.reproduction.table import Line, Row, RowRun
from seqlvm.reproduction.tables import TABLES, avg, collapse

COLLAPSE_ROWS = ["plain", "annealed + word dropout", "keep rate 1", "keep rate 0.75", "keep rate 0.5", "keep rate 0",
                 "RNNLM"]
AVG_ROWS = ["LSTM-VAE (L=1)", "LSTM-VAE-AVG (L=10)"]
TINY_MODEL = {"embedding_dim": 8, "hidden_dim": 8, "latent_dim": 2}
TINY_RUN = {"steps": 3, "train_sentences": 48, "eval_sentences": 12, "iw_samples": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reproduce")


@pytest.fixture(scope="module")
def quick_rows(data_dir):
    return {"collapse": collapse.rows("quick", None, data_dir), "avg": avg.rows("quick", None, data_dir)}


def tiny(row: Row) -> Row:
    """The row with a tiny model, a few steps and a few sentences."""
    config = {**row.settings["config"], **{k: v for k, v in TINY_MODEL.items() if k in row.settings["config"]}}
    return Row(row.table, row.name, {**row.settings, **TINY_RUN, "warmup_steps": 2, "config": config}, row.data)


def row_named(rows: list[Row], name: str) -> Row:
    return next(row for row in rows if row.name == name)


# --- rows ---

def test_both_budgets_have_the_papers_rows_and_settings(quick_rows, data_dir, monkeypatch):
    quick_data = quick_rows["collapse"][0].data
    assert [row.name for row in quick_rows["collapse"]] == COLLAPSE_ROWS
    assert [row.name for row in quick_rows["avg"]] == AVG_ROWS
    # the paper budget's 10,000-word preparation is not made here: its rows read the quick one's
    monkeypatch.setattr(collapse, "prepare_corpus", lambda folder, vocab_size: quick_data)
    monkeypatch.setattr(avg, "prepare_corpus", lambda folder, vocab_size: quick_data)
    paper = {"collapse": collapse.rows("paper", None, data_dir), "avg": avg.rows("paper", None, data_dir)}
    assert [row.name for row in paper["collapse"]] == COLLAPSE_ROWS
    assert [row.name for row in paper["avg"]] == AVG_ROWS
    bowman = row_named(paper["collapse"], "annealed + word dropout").settings
    assert (bowman["config"]["embedding_dim"], bowman["config"]["hidden_dim"], bowman["config"]["latent_dim"],
            bowman["steps"]) == (353, 191, 13, 50000)
    averaged = row_named(paper["avg"], "LSTM-VAE-AVG (L=10)").settings
    training = PreparedDataset.open(quick_data.path).splits["train"].sequences
    assert averaged["steps"] == 30 * math.ceil(training / 32)
    assert (averaged["optimizer"], averaged["lr"], averaged["warmup_steps"]) == ("sgd", 1.0, averaged["steps"] // 3)
    for rows in (*quick_rows.values(), *paper.values()):
        for row in rows:
            assert Row.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_rows_train_what_the_papers_compare(quick_rows):
    settings = {row.name: row.settings for row in quick_rows["collapse"]}
    assert (settings["plain"]["anneal"], settings["plain"]["config"]["word_keep_rate"]) == ("constant", 1.0)
    assert (settings["annealed + word dropout"]["anneal"],
            settings["annealed + word dropout"]["config"]["word_keep_rate"]) == ("sigmoid", 0.62)
    assert [settings[f"keep rate {rate:g}"]["config"]["word_keep_rate"] for rate in (1.0, 0.75, 0.5, 0.0)] == \
        [1.0, 0.75, 0.5, 0.0]
    assert settings["RNNLM"]["model"] == "rnnlm"
    assert settings["RNNLM"]["config"]["hidden_dim"] == settings["plain"]["config"]["hidden_dim"]
    sampling = {row.name: (row.settings["config"]["latent_samples"], row.settings["config"]["average_hidden"])
                for row in quick_rows["avg"]}
    assert sampling == {"LSTM-VAE (L=1)": (1, False), "LSTM-VAE-AVG (L=10)": (10, True)}


def test_both_tables_read_one_preparation_named_by_its_fingerprint(quick_rows):
    data = {row.data for rows in quick_rows.values() for row in rows}
    assert len(data) == 1
    (only,) = data
    assert only.fingerprint == PreparedDataset.open(only.path).fingerprint
    assert "builtin:shakespeare" in only.name


def test_the_sigmoid_is_scaled_to_the_steps():
    cfg = collapse.train_config({"steps": 1000, "anneal": "sigmoid", "batch_size": 8, "optimizer": "adam",
                                 "lr": 1e-3, "seed": 0})
    weight = [kl_weight(step, cfg.kl_anneal, rate=cfg.kl_anneal_rate, midpoint=cfg.kl_anneal_midpoint)
              for step in (200, 500, 800)]
    assert weight == pytest.approx([0.011, 0.5, 0.989], abs=1e-3)


def test_inputless_evaluation_hides_every_word_but_the_start():
    inputs = torch.tensor([[BOS_ID, 7, 8, 9], [BOS_ID, 5, PAD_ID, PAD_ID]])
    hidden = collapse.without_inputs({"inputs": inputs, "targets": inputs})
    assert hidden["inputs"].tolist() == [[BOS_ID, UNK_ID, UNK_ID, UNK_ID], [BOS_ID, UNK_ID, PAD_ID, PAD_ID]]
    assert hidden["targets"] is inputs


# --- runners ---

@pytest.mark.parametrize("name", ["plain", "keep rate 0", "RNNLM"])
def test_collapse_rows_report_their_lines(quick_rows, data_dir, name):
    work = RowRun("quick", data_dir)
    lines = collapse.run(tiny(row_named(quick_rows["collapse"], name)), work)
    assert work.steps == TINY_RUN["steps"]
    assert {line.label for line in lines} == {name}
    assert all(line.ours is not None and math.isfinite(line.ours) and not line.comparable for line in lines)
    paper = {line.metric: line.paper for line in lines}
    if name == "RNNLM":
        assert paper == {"NLL, exact (nats/sentence)": 100.0, "PPL, exact": 116.0}
    elif name == "plain":
        assert list(paper) == list(collapse.METRICS.values())
        assert paper["KL (nats/sentence)"] == 0.0 and "Penn Treebank" in lines[0].basis
    else:
        assert paper["KL (nats/sentence)"] == pytest.approx(20.9, abs=0.01)
        assert paper["cross entropy (nats/sentence)"] == pytest.approx(34.8, abs=0.1)
        assert "Books Corpus" in lines[0].basis


def test_only_keep_rate_0_is_evaluated_inputless(quick_rows, data_dir, monkeypatch):
    measured = collapse.measure
    seen = {}

    def spy(model, sentences, settings, inputless=False):
        seen[settings["config"]["word_keep_rate"]] = inputless
        return measured(model, sentences, settings, inputless)

    monkeypatch.setattr(collapse, "measure", spy)
    for name in ("keep rate 0", "keep rate 0.5"):
        collapse.run(tiny(row_named(quick_rows["collapse"], name)), RowRun("quick", data_dir))
    assert seen == {0.0: True, 0.5: False}


def test_inputless_evaluation_changes_the_likelihood(quick_rows):
    row = tiny(row_named(quick_rows["collapse"], "keep rate 1"))
    dataset = PreparedDataset.open(row.data.path)
    torch.manual_seed(0)
    model = build_model("sentence-vae", row.settings["config"], len(dataset.vocab))
    sentences = dataset.read("test", 12)
    with_words, without = (collapse.measure(model, sentences, row.settings, inputless) for inputless in (False, True))
    assert with_words["nll_bound"] != pytest.approx(without["nll_bound"])


def test_a_row_is_deterministic_given_its_seed(quick_rows, data_dir):
    row = tiny(row_named(quick_rows["avg"], "LSTM-VAE-AVG (L=10)"))
    first, second = (avg.run(row, RowRun("quick", data_dir)) for _ in range(2))
    assert first == second
    assert [line.metric for line in first] == list(avg.METRICS.values())
    assert {line.metric: line.paper for line in first}["KL (nats/sentence)"] == 8.1


# --- checks ---

def collapse_lines(kl: dict[str, float], iw_nll: float = 101.0, rnnlm: float = 100.0) -> list[Line]:
    lines = [Line(name, collapse.METRICS["kl"], value, None, False, "") for name, value in kl.items()]
    return lines + [Line("annealed + word dropout", collapse.METRICS["iw_nll"], iw_nll, None, False, ""),
                    Line("RNNLM", collapse.RNNLM_METRICS["nll_bound"], rnnlm, None, False, "")]


PAPER_LIKE_KL = {"plain": 0.0, "annealed + word dropout": 2.0, "keep rate 1": 0.01, "keep rate 0.75": 8.8,
                 "keep rate 0.5": 15.1, "keep rate 0": 20.9}


def holds(checks) -> list[bool]:
    return [check.holds for check in checks]


def test_collapse_checks_hold_on_the_papers_numbers():
    assert holds(collapse.checks(collapse_lines(PAPER_LIKE_KL))) == [True] * 5


@pytest.mark.parametrize("change, failing", [
    ({"plain": 0.1}, [0]),  # not collapsed
    ({"annealed + word dropout": 0.2}, [1]),  # not clearly above 0
    ({"plain": 0.04, "annealed + word dropout": 0.3}, [1]),  # above 0.25 but not 10x the plain KL
    ({"keep rate 0": 0.005}, [2, 3]),  # the inputless KL under the full keep rate's
    ({"keep rate 0.75": 16.0}, [3]),  # not monotone
])
def test_collapse_checks_fail_against_the_papers_trends(change, failing):
    checks = collapse.checks(collapse_lines({**PAPER_LIKE_KL, **change}))
    assert [i for i, check in enumerate(checks) if not check.holds] == failing


@pytest.mark.parametrize("iw_nll, rnnlm, expected", [(101.0, 100.0, True), (99.0, 100.0, False),
                                                      (106.0, 100.0, False)])
def test_the_vae_must_be_slightly_worse_than_the_rnnlm(iw_nll, rnnlm, expected):
    assert collapse.checks(collapse_lines(PAPER_LIKE_KL, iw_nll, rnnlm))[4].holds is expected


def test_a_missing_row_fails_its_checks():
    lines = [line for line in collapse_lines(PAPER_LIKE_KL) if line.label != "keep rate 0.75"]
    assert holds(collapse.checks(lines)) == [True, True, True, False, True]


def avg_lines(single: dict[str, float], averaged: dict[str, float]) -> list[Line]:
    return [Line(name, avg.METRICS[key], value, None, False, "")
            for name, values in zip(AVG_ROWS, (single, averaged)) for key, value in values.items()]


def test_avg_checks_follow_the_paper():
    single = {"kl": 1.5, "mutual_info": 1.0, "nll_bound": 102.5, "iw_nll": 102.1}
    averaged = {"kl": 8.1, "mutual_info": 3.0, "nll_bound": 94.3, "iw_nll": 91.7}
    assert holds(avg.checks(avg_lines(single, averaged))) == [True] * 4
    assert holds(avg.checks(avg_lines(averaged, single))) == [False] * 4


def test_both_tables_are_registered():
    assert TABLES["collapse"] is collapse.TABLE and TABLES["avg"] is avg.TABLE
    assert collapse.TABLE.paper_cost and avg.TABLE.paper_cost
