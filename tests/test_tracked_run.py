"""One way a run ends (seqlvm/training/tracked_run.py), on a real SQLite MLflow store and real checkpoints, without
Ray: a run opened again by name is the same run; the metrics a last checkpoint holds undelivered are sent once; the
end sets the curves, the tags and the status; a sweep ends each trial's run the same way (tune/summary.py), and its
champion is the trial with the best objective."""
from __future__ import annotations

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
