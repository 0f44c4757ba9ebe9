"""Sweeps end to end on real Ray and a real SQLite MLflow store.

The first sweep's driver runs in a subprocess joined to the test session's Ray; it is killed (SIGKILL) once
its first trial has finished, then `seqlvm tune --resume` completes it. Every assertion about a sweep (parent
and child runs, no finished trial re-run, figures, the registered champion, loading it through MLflow) is made
on that resumed sweep. (The champion rule itself is tested on a real store in test_registry.py.)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest

from seqlvm import cli, tracking
from seqlvm.evaluation import COLLAPSE_PENALTY
from seqlvm.tracking import registry

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

NAME = "tiny-sweep-vae"
TRIALS = 2  # the first finishes before the driver is killed, the resume runs the other
TINY_SWEEP = """
model: {embedding_dim: 32, hidden_dim: 32, latent_dim: 4}
train: {batch_size: 32, max_steps: 8, log_every: 2, eval_every: 4, eval_batches: 3}
tune:
  # 8 steps teach a latent little: no collapse guard here (test_a_sweep_whose_latent_is_unused_... has one)
  min_mutual_info: 0
  min_active_units: 0
  space:
    train.kl_anneal: {choice: [sigmoid, linear]}
    train.kl_anneal_rate: {loguniform: [0.3, 1.0], when: {train.kl_anneal: sigmoid}}
    train.kl_warmup_steps: {int: [2, 8], when: {train.kl_anneal: linear}}
    train.lr: {loguniform: [0.003, 0.01]}
"""


def trial_statuses(sweep_dir) -> list[str]:
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError):  # caught mid-write
        return []
    return [json.loads(entry[0] if isinstance(entry, list) else entry)["status"] for entry in trials]


def sweep_args(data, config, workdir, name, *extra) -> list[str]:
    return ["tune", "--data", str(data), "--config", str(config), "--workdir", str(workdir), "--name", name,
            "--max-concurrent", "1", "--iw-samples", "3", "--registered-name", NAME, *extra]


@pytest.fixture(scope="module")
def resumed_sweep(ray_session, shakespeare, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = root / "sweep.yaml"
    config.write_text(TINY_SWEEP)
    workdir = root / "runs"
    address = ray_session.get_runtime_context().gcs_address
    log = open(root / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "seqlvm.cli", *sweep_args(shakespeare, config, workdir, "first", "--num-samples",
                                                         str(TRIALS), "--address", address)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while "TERMINATED" not in trial_statuses(workdir / "tune" / "first"):
        assert driver.poll() is None, (root / "driver.log").read_text()[-3000:]
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep, as on a lost machine
    driver.wait()
    log.close()
    killed_state = trial_statuses(workdir / "tune" / "first")
    uri = tracking.resolve_tracking_uri(None, workdir)
    first_trial_steps = _valid_steps(uri)
    assert cli.main(["tune", "--resume", "--name", "first", "--workdir", str(workdir)]) == 0
    return uri, workdir, killed_state, first_trial_steps


def _child_runs(uri, sweep="first"):
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("seqlvm").experiment_id
    return client.search_runs([experiment], f"tags.`seqlvm.sweep` = '{sweep}'")


def _valid_steps(uri) -> dict[str, list[int]]:
    client = tracking.client(uri)
    return {r.data.tags["seqlvm.trial_id"]: [m.step for m in client.get_metric_history(r.info.run_id,
                                                                                         "valid/nll_bound")]
            for r in _child_runs(uri)}


def test_resume_finishes_the_sweep_without_rerunning_finished_trials(resumed_sweep):
    uri, workdir, killed_state, before = resumed_sweep
    assert 1 <= killed_state.count("TERMINATED") < TRIALS  # killed mid-sweep
    assert trial_statuses(workdir / "tune" / "first").count("TERMINATED") == TRIALS
    after = _valid_steps(uri)
    assert len(after) == TRIALS  # one MLflow run per trial, none duplicated by the resume
    finished_before = [trial for trial, steps in before.items() if steps and steps[-1] == 8]
    assert finished_before
    for trial in finished_before:
        assert after[trial] == before[trial]  # not trained again
    client = tracking.client(uri)
    parents = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id],
                                 "tags.`seqlvm.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_parent_and_child_runs_carry_the_sweep(resumed_sweep):
    uri, _, _, _ = resumed_sweep
    client = tracking.client(uri)
    parent = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id],
                                "tags.`seqlvm.kind` = 'sweep'")[0]
    assert parent.data.params["search"] == "tpe" and parent.data.params["num_samples"] == str(TRIALS)
    assert parent.data.metrics["trials/total"] == TRIALS
    assert parent.data.tags["seqlvm.registered_version"] == "1"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/objective_by_trial.png" in artifacts
    table = client.download_artifacts(parent.info.run_id, "trials.csv")
    rows = list(pd.read_csv(table)["trial"])
    assert len(rows) == TRIALS
    for child in _child_runs(uri):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.tags["seqlvm.outcome"] in ("finished", "stopped early")
        assert "train.lr" in child.data.params and "valid/nll_bound" in child.data.metrics
        sampled = json.loads(child.data.tags["seqlvm.sampled"])
        assert float(child.data.params["train.lr"]) == pytest.approx(sampled["train.lr"])


def test_best_trial_is_registered_as_champion_and_loads_through_mlflow(resumed_sweep, shakespeare):
    uri, _, _, _ = resumed_sweep
    client = tracking.client(uri)
    champion = registry.current_alias_version(client, NAME)
    assert str(champion.version) == "1"
    assert champion.tags["seqlvm.sweep"] == "first" and float(champion.tags["valid.nll_bound"]) > 0
    manifest = json.loads((shakespeare / "manifest.json").read_text())
    assert champion.tags["seqlvm.data_fingerprint"] == manifest["fingerprint"]
    best_child = [r for r in _child_runs(uri) if r.info.run_id == champion.run_id]
    assert best_child  # the version comes from the best trial's own run
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(pd.DataFrame({"sentence": ["", "the king is dead ."]}), params={"max_len": 10})
    assert list(out["source"]) == ["prior", "posterior"] and out["output"].str.len().sum() > 0


def test_starting_an_existing_sweep_again_asks_for_resume(resumed_sweep, shakespeare, capsys):
    _, workdir, _, _ = resumed_sweep
    config = workdir.parent / "sweep.yaml"
    assert cli.main(sweep_args(shakespeare, config, workdir, "first", "--num-samples", "1")) == 2
    assert "exists; pass --resume" in capsys.readouterr().err


def test_a_sweep_whose_latent_is_unused_crowns_no_champion(ray_session, shakespeare, tmp_path, capsys):
    """The collapse guard on real trials: with a minimum no 8-step model reaches, the trial is marked collapsed
    and penalised, and the version registered from it does not become champion."""
    config = tmp_path / "sweep.yaml"
    config.write_text(TINY_SWEEP)
    workdir = tmp_path / "runs"
    uri = tracking.resolve_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}", workdir)  # not the exported one
    args = sweep_args(shakespeare, config, workdir, "guarded", "--num-samples", "1", "--scheduler", "none",
                      "--min-mutual-info", "100", "--samples", "0", "--tracking-uri", uri)
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    assert "collapse guard: mutual info >= 100, active units >= 0" not in printed.err  # 0 checks nothing
    assert "collapse guard: mutual info >= 100" in printed.err
    assert "version 1 is not champion: its latent is unused (mutual_info" in printed.out
    client = tracking.client(uri)
    assert registry.current_alias_version(client, NAME) is None
    version = client.get_model_version(NAME, "1")
    assert json.loads(version.tags["seqlvm.collapse_guard"])["min_mutual_info"] == 100.0
    assert "valid.mutual_info" in version.tags and "test.decode_distinct" in version.tags
    parent = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id],
                                "tags.`seqlvm.kind` = 'sweep'")[0]
    assert parent.data.params["guard.min_mutual_info"] == "100.0" and "collapse guard" in parent.data.params[
        "objective"]
    trial = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv")).iloc[0]
    assert bool(trial["collapsed"]) and trial["objective"] >= COLLAPSE_PENALTY
    assert 0.0 <= trial["valid_mutual_info"] < 100.0
