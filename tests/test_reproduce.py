"""`seqlvm reproduce`: one table end to end on real data (the words task from wordfreq's frequencies) as a Tune run
on the session's Ray with a real SQLite MLflow store, and the framework's parts without Ray: the tables' Markdown and
CSV, the results page's generated block, the checks, and the refusals before Ray starts."""
from __future__ import annotations

import csv
import dataclasses
import math

import pytest

from pipelines.dataset import PreparedDataset
from seqlvm import cli, tracking
from seqlvm.reproduction.report import BEGIN, CSV_COLUMNS, END, TableResult, update_page
from seqlvm.reproduction.runner import metric_name
from seqlvm.reproduction.table import DataFile, Line, Row, RowOutcome, trend, value
from seqlvm.reproduction.tables import TABLES, words


def test_the_words_table_end_to_end(ray_session, tmp_path, capsys, monkeypatch):
    """With a row added that fails in its Ray worker (a model the table does not know): the other rows run, the
    failed one is a line of the table with its reason, and the command exits 1 once the tables are written."""
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\nhand-written text\n\n{BEGIN}\nthe last run's tables\n{END}\n\nmore text\n")
    table_rows = words.rows

    def with_a_failing_row(budget, data_root, data_dir):
        found = table_rows(budget, data_root, data_dir)
        return [*found, dataclasses.replace(found[-1], name="no such model")]

    # the driver builds the rows in this process; the workers run them with the table's own code
    monkeypatch.setitem(TABLES, "words", dataclasses.replace(words.TABLE, rows=with_a_failing_row))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = cli.main(["reproduce", "words", "--budget", "quick", "--out", str(tmp_path / "out"), "--tracking-uri",
                     uri, "--results-page", str(page)])
    printed = capsys.readouterr()
    assert code == 1 and printed.err.strip().splitlines()[-1] == (
        "seqlvm: error: 1 of 6 rows failed, first words / no such model: KeyError: 'no such model'")

    with open(tmp_path / "out" / "words.csv") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        records = list(reader)
    failed = records.pop()
    assert (failed["row"], failed["failure"], failed["ours"]) == ("no such model", "KeyError: 'no such model'", "")
    rows = ("ORACLE-TRAIN", *words.MODELS)
    assert [(r["row"], r["metric"]) for r in records] == [(row, m) for row in rows for m in words.METRICS.values()]
    assert {r["failure"] for r in records} == {""}
    # wordfreq's words are not BooksCorpus's: no row compares, and each says why
    assert {r["comparable"] for r in records} == {"False"}
    assert all("BooksCorpus" in r["basis"] for r in records)
    prepared = PreparedDataset.open(str(tmp_path / "out" / "data" / "words-quick"))
    assert {r["fingerprint"] for r in records} == {prepared.fingerprint}
    for record in records:
        paper = words.PAPER[record["row"]][list(words.METRICS.values()).index(record["metric"])]
        assert (record["paper"] == "") if paper is None else float(record["paper"]) == paper
        if record["metric"].startswith("H[P_train"):
            assert math.isfinite(float(record["ours"])) and float(record["ours"]) > 0
    trained = [r for r in records if r["row"] != "ORACLE-TRAIN"]
    assert {int(r["steps"]) for r in trained} == {words.BUDGETS["quick"]["steps"]}
    assert all(float(r["wall_s"]) > 0 for r in trained)

    markdown = (tmp_path / "out" / "words.md").read_text()
    assert "| TRIL, K=10 | H[P_test, P^] (nats) |" in markdown
    assert "| no such model | failed: KeyError: 'no such model' |" in markdown
    verdicts = [line for line in markdown.splitlines() if line.startswith(("- holds: ", "- does NOT hold: "))]
    assert len(verdicts) == len(words.checks([]))
    # the page's generated block is this run's; the hand-written text around it stays
    text = page.read_text()
    assert "the last run's tables" not in text and "hand-written text" in text and text.endswith("more text\n")
    assert text.count(BEGIN) == 1 and "| BASELINE-8D |" in text
    assert "BASELINE-8D" in printed.out and "ETA" in printed.err

    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("reproduce")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("seqlvm.kind") == "reproduce"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"  # a row failed
    children = {run.data.tags["seqlvm.reproduce.row"]: run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert sorted(children) == sorted([*rows, "no such model"])
    assert {name: run.info.status for name, run in children.items()} == {
        **{name: "FINISHED" for name in rows}, "no such model": "FAILED"}
    assert {run.data.params["budget"] for run in children.values()} == {"quick"}
    tril = children["TRIL"]
    assert tril.data.params["data.fingerprint"] == prepared.fingerprint
    assert any(key.startswith("TRIL/H_P_test") for key in tril.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "tables")}
    assert artifacts == {"tables/words.md", "tables/words.csv"}


@pytest.mark.parametrize("args, says", [
    (["nosuch"], "nosuch: no such table"),
    (["words", "--data-root", "/nonexistent/papers"], "--data-root /nonexistent/papers: not a folder"),
    (["words", "--cpus", "0"], "--cpus 0: give at least 1"),
    (["words", "--results-page", "/nonexistent/results.md"], "--results-page /nonexistent/results.md: no such file"),
])
def test_bad_input_is_one_line_before_ray_starts(args, says, tmp_path, capsys):
    import ray

    started = ray.is_initialized()
    assert cli.main(["reproduce", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqlvm: error: ") and says in err and len(err.splitlines()) == 1
    assert ray.is_initialized() == started
    assert not (tmp_path / "out").exists()


def outcome(name: str, lines: list[Line], failure: str | None = None) -> RowOutcome:
    return RowOutcome(Row("words", name, {}, DataFile("data.npz", "/d/data.npz", "abc123")), tuple(lines), 10, 61.0,
                      failure)


def test_a_table_is_markdown_and_csv_with_each_basis_once_and_failed_rows_shown():
    lines = [Line("A", "nll", 1.5, 1.25, True, "same files"), Line("A", "kl", 0.004, None, False, "other data")]
    result = TableResult(words.TABLE, "quick", (outcome("A", lines), outcome("B", [], "ValueError: NaN loss")),
                         (trend("A is small", {"A": 1.5}, lambda a: a < 2),))
    records = result.records()
    assert [(r["label"], r["metric"], r["comparable"], r["failure"]) for r in records] == [
        ("A", "nll", True, ""), ("A", "kl", False, ""), ("B", "", False, "ValueError: NaN loss")]
    markdown = result.markdown()
    assert "| A | nll | 1.50 | 1.25 | yes [1] | 10 | 1m01s |" in markdown
    assert "| A | kl | 0.004 | - | no [2] |" in markdown
    assert "| B | failed: ValueError: NaN loss |" in markdown
    assert "- [1] same files\n- [2] other data" in markdown
    assert "data.npz (`abc123`)" in markdown and "- holds: A is small (A 1.500)" in markdown
    assert result.csv().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_the_results_page_block_is_replaced_or_appended(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    update_page(page, f"{BEGIN}\nnew\n{END}")
    assert page.read_text() == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    page.write_text("intro\n")
    update_page(page, f"{BEGIN}\nnew\n{END}")
    assert page.read_text() == f"intro\n\n{BEGIN}\nnew\n{END}\n"


def test_a_check_holds_only_when_every_value_is_there_and_the_trend_holds():
    lines = [Line("K=1", "x", 3.0, None, False, ""), Line("K=10", "x", 2.0, None, False, "")]
    assert value(lines, "K=10", "x") == 2.0 and value(lines, "K=100", "x") is None
    assert trend("lower", {"K=1": 3.0, "K=10": 2.0}, lambda a, b: b < a).holds
    assert not trend("lower", {"K=1": 2.0, "K=10": 3.0}, lambda a, b: b < a).holds
    missing = trend("lower", {"K=1": 3.0, "K=10": None}, lambda a, b: b < a)
    assert not missing.holds and "a row is missing" in missing.detail


def test_the_words_checks_read_the_test_cross_entropy():
    def lines(k1: float, k10: float, gru: float) -> list[Line]:
        test = words.METRICS["xent_test"]
        return [Line("TRIL", test, k1, None, False, ""), Line("TRIL, K=10", test, k10, None, False, ""),
                Line("BASELINE-8D", test, gru, None, False, ""),
                Line("TRIL, K=10", words.METRICS["mutual_information"], 0.5, None, False, "")]

    assert [c.holds for c in words.checks(lines(12.0, 11.0, 13.0))] == [True, True, True]
    assert [c.holds for c in words.checks(lines(11.0, 12.0, 11.5))] == [False, False, True]


def test_metric_names_are_ones_mlflow_takes():
    assert metric_name(Line("TRIL, K=10", "H[P_test, P^] (nats)", 1.0, None, False, "")) == \
        "TRIL_ K_10/H_P_test_ P__ _nats_"
