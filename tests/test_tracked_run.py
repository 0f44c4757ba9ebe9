"""One way a run ends (seqlvm/training/tracked_run.py), on a real SQLite MLflow store and real checkpoints, without
Ray: a run opened again by name is the same run, in an experiment the MLflow UI opens as model training, with its
corpus as its dataset input once; the metrics a last checkpoint holds undelivered are sent once; the end sets the
curves, the tags and the status; a sweep ends each trial's run the same way (tune/summary.py), its champion is the
trial with the best objective, and its objective figure is scaled to the trials the collapse guard accepted."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from seqlvm import tracking
from seqlvm.checkpoint import save_checkpoint
from seqlvm.models import build_model
from seqlvm.training import RunSpec, TrackedRun
from tune import summary

DATA = PreparedDataset.open(Path(__file__).parent / "fixtures" / "datasets" / "tiny-text")
SPEC = RunSpec.build(None, ["model.embedding_dim=4", "model.hidden_dim=4", "model.latent_dim=2"])


@pytest.fixture
def store(tmp_path) -> tuple[str, str]:
    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    return uri, tracking.ensure_experiment(uri, "runs", tmp_path)


def checkpoint_holding(folder: Path, pending: list[tuple[str, float, int]]) -> str:
    """A checkpoint folder whose model.pt holds these (key, value, step) metrics undelivered, as a worker writes it."""
    folder.mkdir(parents=True)
    now = int(time.time() * 1000)
    save_checkpoint(folder, build_model("sentence-vae", {"embedding_dim": 4, "hidden_dim": 4, "latent_dim": 2}, 25),
                    step=4, pending_metrics=[[key, value, now, step] for key, value, step in pending])
    return str(folder)


def steps_of(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, key))


def test_a_run_opened_again_by_name_is_the_same_run_resumed_with_its_parameters(store):
    uri, experiment = store
    first = TrackedRun.open(uri, experiment, "run-a", SPEC, DATA, workers=2, tags={"seqlvm.sweep": "s"})
    again = TrackedRun.open(uri, experiment, "run-a", SPEC, DATA, workers=2)
    assert (first.resumed, again.resumed) == (False, True) and again.run_id == first.run_id
    run = tracking.client(uri).get_run(first.run_id)
    assert run.data.params["model.latent_dim"] == "2" and run.data.params["workers"] == "2"
    assert run.data.params["data.vocab_size"] == str(DATA.input_size) and run.data.tags["seqlvm.sweep"] == "s"


def test_the_experiment_opens_as_model_training_and_keeps_a_kind_a_user_chose(store, tmp_path):
    uri, experiment = store
    client = tracking.client(uri)
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    untagged = client.create_experiment("made-elsewhere")  # before seqlvm used it
    assert tracking.ensure_experiment(uri, "made-elsewhere", tmp_path) == untagged
    assert client.get_experiment(untagged).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(experiment, "mlflow.experimentKind", "genai_development")
    tracking.ensure_experiment(uri, "runs", tmp_path)
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "genai_development"


def test_a_run_logs_its_corpus_as_its_training_dataset_once(store):
    uri, experiment = store
    first = TrackedRun.open(uri, experiment, "run-f", SPEC, DATA, workers=1)
    TrackedRun.open(uri, experiment, "run-f", SPEC, DATA, workers=1)  # resumed: the same input, not a second
    inputs = tracking.client(uri).get_run(first.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.source_type) == ("tiny.txt", "local")
    assert dataset.digest == DATA.fingerprint[:36]  # MLflow keeps 36 characters of a digest
    assert json.loads(dataset.source) == {"uri": DATA.location}
    assert json.loads(dataset.profile)["train"] == {"sequences": 42, "steps": 288}
    assert json.loads(dataset.profile).keys() == {"train", "valid", "test"}
    assert {(t.key, t.value) for t in inputs[0].tags} == {("mlflow.data.context", "training")}


def test_the_metrics_a_last_checkpoint_holds_are_delivered_once(store, tmp_path):
    uri, experiment = store
    run = TrackedRun.open(uri, experiment, "run-b", SPEC, DATA, workers=1)
    checkpoint = checkpoint_holding(tmp_path / "ckpt", [("train/nll_bound", 3.0, 2), ("valid/nll_bound", 4.0, 4)])
    run.deliver_pending(checkpoint)
    run.deliver_pending(checkpoint)  # a second end (a resumed sweep's) sends them again: harmless
    assert steps_of(uri, run.run_id, "train/nll_bound") == [2] and steps_of(uri, run.run_id, "valid/nll_bound") == [4]


def test_an_unreachable_store_at_the_end_is_a_loud_error_naming_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = TrackedRun("http://127.0.0.1:9", "0" * 32, "run-c")
    checkpoint = checkpoint_holding(tmp_path / "ckpt", [("train/nll_bound", 3.0, 2)])
    with pytest.raises(SeqlvmError) as refused:
        run.deliver_pending(checkpoint, wait_s=0)
    assert "unreachable" in str(refused.value) and f"1 metrics are kept in {checkpoint}" in str(refused.value)


def test_the_end_logs_curves_tags_and_the_status_with_its_reason(store):
    uri, experiment = store
    client = tracking.client(uri)
    finished = TrackedRun.open(uri, experiment, "run-d", SPEC, DATA, workers=1)
    tracking.MetricLogger(uri, finished.run_id).log({"train/nll_bound": 5.0, "valid/nll_bound": 6.0}, step=2)
    finished.close(tags={"seqlvm.outcome": "finished"})
    run = client.get_run(finished.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["seqlvm.outcome"] == "finished"
    assert "seqlvm.failure" not in run.data.tags
    assert "figures/learning_curves.png" in {a.path for a in client.list_artifacts(finished.run_id, "figures")}
    failed = TrackedRun.open(uri, experiment, "run-e", SPEC, DATA, workers=1)
    with pytest.raises(SeqlvmError, match="^training run run-e stopped: NaN$"):
        failed.fail("training run run-e stopped: NaN")
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and run.data.tags["seqlvm.failure"] == "training run run-e stopped: NaN"


def trial_row(trial: str, objective: float | None, checkpoint: str | None, outcome="finished", error="") -> dict:
    return {"trial": trial, "outcome": outcome, "step": 4, "objective": objective, "checkpoint_path": checkpoint,
            "error": error, "params": {}}


def test_a_sweep_ends_each_trial_run_as_a_training_run_ends(store, tmp_path):
    uri, experiment = store
    runs = {trial: TrackedRun.open(uri, experiment, f"sweep-{trial}", SPEC, DATA, workers=1,
                                   tags={"seqlvm.sweep": "sweep", "seqlvm.trial_id": trial})
            for trial in ("t1", "t2")}
    rows = [trial_row("t1", 9.0, checkpoint_holding(tmp_path / "t1", [("valid/nll_bound", 9.0, 4)])),
            trial_row("t2", None, checkpoint_holding(tmp_path / "t2", [("train/nll_bound", 1e9, 2)]),
                      outcome="error", error="FloatingPointError: loss was NaN/inf")]
    summary.end_trial_runs(uri, experiment, "sweep", rows, storage=None)
    client = tracking.client(uri)
    assert [row["run_id"] for row in rows] == [runs["t1"].run_id, runs["t2"].run_id]
    ended = {trial: client.get_run(run.run_id) for trial, run in runs.items()}
    assert steps_of(uri, runs["t1"].run_id, "valid/nll_bound") == [4]  # delivered by the sweep's end
    assert steps_of(uri, runs["t2"].run_id, "train/nll_bound") == [2]
    assert ended["t1"].info.status == "FINISHED" and ended["t1"].data.tags["seqlvm.outcome"] == "finished"
    assert ended["t2"].info.status == "FAILED" and ended["t2"].data.tags["seqlvm.outcome"] == "error"
    assert ended["t2"].data.tags["seqlvm.failure"] == "FloatingPointError: loss was NaN/inf"
    summary.end_trial_runs(uri, experiment, "sweep", rows, storage=None)  # ended again on resume: nothing doubles
    assert max(Counter(steps_of(uri, runs["t1"].run_id, "valid/nll_bound")).values()) == 1


def test_the_champion_is_the_scored_trial_with_the_best_objective():
    rows = [trial_row("a", 120.0, "ck-a"), trial_row("b", 95.5, "ck-b"), trial_row("c", None, None, "error"),
            trial_row("d", 80.0, None), trial_row("e", 1095.0, "ck-e")]  # d: best, but no checkpoint to register
    assert summary.best_row(rows)["trial"] == "b"
    assert summary.best_row([trial_row("c", None, None, "error")]) is None


def test_the_objective_figure_is_scaled_to_the_trials_the_collapse_guard_accepted():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{**trial_row("a", 120.0, "ck-a"), "collapsed": False, "valid_nll_bound": 120.0},
            {**trial_row("b", 1090.0, "ck-b"), "collapsed": True, "valid_nll_bound": 90.0},  # + the penalty
            {**trial_row("c", 100.0, "ck-c"), "collapsed": False, "valid_nll_bound": 100.0}]
    low, high = summary.objective_axis(rows)
    assert low < 100.0 and 120.0 < high < 130.0
    fig, ax = plt.subplots()
    try:
        summary.draw_objective(ax, rows)
        assert ax.get_ylim() == (low, high)
        best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
        assert list(best.get_ydata()) == [120.0, 100.0]  # accepted trials only
        rejected = next(c for c in ax.collections if c.get_label() == "rejected by the collapse guard (top edge)")
        assert rejected.get_offsets().tolist() == [[2.0, high]]
    finally:
        plt.close(fig)
    only_rejected = summary.objective_axis([rows[1]])
    assert only_rejected[0] < 90.0 < only_rejected[1] < 100.0
