"""Sweeps end to end on real Ray and a real SQLite MLflow store.

The first sweep's driver runs in a subprocess joined to the test session's Ray; it is killed (SIGKILL) once Tune
has recorded its first trial as finished, while the second trial is held back (it cannot get a CPU for its data),
then `seqlvm tune --resume` completes it. Every assertion about a sweep (parent and child runs, the finished trial
not run again, figures, the best trial registered as champion, loading it through MLflow) is made on that resumed
sweep. (The champion rule itself is tested on a real store in test_registry.py.)
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import committed_checkpoint, wait_for

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
  # 8 steps teach a latent little: no collapse guard here (test_a_sweep_whose_decodes_ignore_z_... has one)
  min_mutual_info: 0
  min_active_units: 0
  min_decode_distinct: 0
  min_decode_f1_gain: 0
  space:
    train.kl_anneal: {choice: [sigmoid, linear]}
    train.kl_anneal_rate: {loguniform: [0.3, 1.0], when: {train.kl_anneal: sigmoid}}
    train.kl_warmup_steps: {int: [2, 8], when: {train.kl_anneal: linear}}
    train.lr: {loguniform: [0.003, 0.01]}
"""
# Each trial's worker takes half a CPU, and the held-back trial is left less than the one CPU a Ray Data read task
# needs: it starts, and waits for its data until the test gives the CPUs back.
WORKER_CPUS = 0.5
LEFT_FREE = 0.4


def trial_states(sweep_dir: Path) -> dict[str, str]:
    """{trial id: status} as Tune last saved them."""
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError):  # caught mid-write
        return {}
    found = {}
    for entry in trials:
        state = json.loads(entry[0] if isinstance(entry, list) else entry)
        found[state["trial_id"]] = state["status"]
    return found


def files_of(folder: Path) -> dict[str, str]:
    """Every file under a folder, with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def trial_files(sweep_dir: Path, trial_id: str) -> dict[str, str]:
    """A trial's own Tune and Train state: its Tune folder (results, params) and its Ray Train run (checkpoints and
    the checkpoint manager's snapshot)."""
    folders = [*sweep_dir.glob(f"run_trial_{trial_id}_*"), sweep_dir / "train" / trial_id]
    assert all(folder.is_dir() for folder in folders) and len(folders) == 2, folders
    return {f"{folder.name}/{name}": digest for folder in folders for name, digest in files_of(folder).items()}


def sweep_args(data, config, workdir, name, *extra) -> list[str]:
    return ["tune", "--data", str(data), "--config", str(config), "--workdir", str(workdir), "--name", name,
            "--max-concurrent", "1", "--iw-samples", "3", "--registered-name", NAME, *extra]


@pytest.fixture(scope="module")
def resumed_sweep(ray_session, shakespeare_small_splits, tmp_path_factory):
    """(tracking URI, workdir, {trial: status} when killed, each trial's validation steps in MLflow then, the
    finished trial's own files then): a 2-trial sweep killed after its first trial, then resumed."""
    root = tmp_path_factory.mktemp("sweep")
    config = root / "sweep.yaml"
    config.write_text(TINY_SWEEP)
    workdir = root / "runs"
    sweep = workdir / "tune" / "first"
    uri = tracking.resolve_tracking_uri(None, workdir)
    log_path = root / "driver.log"
    log = open(log_path, "w")
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "seqlvm.cli", *sweep_args(shakespeare_small_splits, config, workdir, "first",
                                                         "--num-samples", str(TRIALS), "--cpus-per-worker",
                                                         str(WORKER_CPUS), "--address", address)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def training_started():
        assert driver.poll() is None, log_path.read_text()[-3000:]
        return any((sweep / "train").glob("*"))

    # The first trial's Ray Train run has started (it has read its data; its worker still has to start and train):
    # pause the sweep's driver, so that Tune starts no other trial until the CPUs it would need are held. The trial
    # trains on; Tune takes its results once the driver goes on. (Paused earlier, the trial's data takes minutes.)
    held = None
    try:
        wait_for(training_started, 400, "the first trial's training", log=log_path)
        os.kill(driver.pid, signal.SIGSTOP)
        try:
            # its worker holds its CPU once it has a checkpoint; then hold every CPU but LEFT_FREE
            first = wait_for(lambda: [d for d in (sweep / "train").glob("*") if committed_checkpoint(d)], 400,
                             "the first trial's first checkpoint", log=log_path)[0]
            held = ray_session.util.placement_group([{"CPU": ray_session.available_resources()["CPU"] - LEFT_FREE}])
            ray_session.get(held.ready(), timeout=120)
        finally:
            os.kill(driver.pid, signal.SIGCONT)
        wait_for(lambda: trial_states(sweep).get(first.name) == "TERMINATED", 400, "Tune to record the first trial",
                 log=log_path)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep, as on a lost machine
        driver.wait()
        log.close()
        if held is not None:
            ray_session.util.remove_placement_group(held)
    killed_state = trial_states(sweep)
    finished_files = trial_files(sweep, first.name)
    first_trial_steps = _valid_steps(uri)
    assert cli.main(["tune", "--resume", "--name", "first", "--workdir", str(workdir)]) == 0
    return uri, workdir, killed_state, first_trial_steps, {first.name: finished_files}


def _child_runs(uri, sweep="first"):
    client = tracking.client(uri)
    try:
        experiment = client.get_experiment_by_name("seqlvm")
    except Exception:  # the store is not created yet
        return []
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`seqlvm.sweep` = '{sweep}'")


def _valid_steps(uri) -> dict[str, list[int]]:
    client = tracking.client(uri)
    return {r.data.tags["seqlvm.trial_id"]: [m.step for m in client.get_metric_history(r.info.run_id,
                                                                                         "valid/nll_bound")]
            for r in _child_runs(uri)}


def test_resume_finishes_the_sweep_without_rerunning_finished_trials(resumed_sweep):
    uri, workdir, killed_state, before, finished_files = resumed_sweep
    assert list(killed_state.values()).count("TERMINATED") == 1  # killed mid-sweep, the second held back
    assert list(trial_states(workdir / "tune" / "first").values()) == ["TERMINATED"] * TRIALS
    for trial, files in finished_files.items():
        # Tune did not run the finished trial again: its results and its Ray Train checkpoints are as they were
        assert trial_files(workdir / "tune" / "first", trial) == files
        assert before[trial] == [4, 8]
    after = _valid_steps(uri)
    assert len(after) == TRIALS  # one MLflow run per trial, none duplicated by the resume
    assert all(after[trial] == before[trial] for trial in finished_files)
    client = tracking.client(uri)
    parents = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id],
                                 "tags.`seqlvm.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_parent_and_child_runs_carry_the_sweep(resumed_sweep):
    uri, _, _, _, _ = resumed_sweep
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


def test_best_trial_is_registered_as_champion_and_loads_through_mlflow(resumed_sweep, shakespeare_small_splits):
    uri, _, _, _, _ = resumed_sweep
    client = tracking.client(uri)
    champion = registry.current_alias_version(client, NAME)
    assert str(champion.version) == "1"
    assert champion.tags["seqlvm.sweep"] == "first" and float(champion.tags["valid.nll_bound"]) > 0
    manifest = json.loads((shakespeare_small_splits / "manifest.json").read_text())
    assert champion.tags["seqlvm.data_fingerprint"] == manifest["fingerprint"]
    # The version comes from the run of the trial with the best objective in the sweep's own table
    parent = client.get_run(client.get_run(champion.run_id).data.tags["mlflow.parentRunId"])
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv"))
    assert table["objective"].nunique() == TRIALS  # the trials differ, so the best one is a real choice
    best = table.loc[table["objective"].idxmin(), "trial"]
    assert champion.tags["seqlvm.trial_id"] == best
    assert client.get_run(champion.run_id).data.tags["seqlvm.trial_id"] == best
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(pd.DataFrame({"sentence": ["", "the king is dead ."]}), params={"max_len": 10})
    assert list(out["source"]) == ["prior", "posterior"] and out["output"].str.len().sum() > 0


def test_starting_an_existing_sweep_again_asks_for_resume(resumed_sweep, shakespeare_small_splits, capsys):
    _, workdir, _, _, _ = resumed_sweep
    config = workdir.parent / "sweep.yaml"
    assert cli.main(sweep_args(shakespeare_small_splits, config, workdir, "first", "--num-samples", "1")) == 2
    assert "exists; pass --resume" in capsys.readouterr().err


# A model that carries its sentence in z but whose decoder ignores it: the bag-of-words loss, at a high rate and no KL
# cost, makes 20 steps encode each sentence's words (about 2 nats of I(x; z) on validation), while the decoder sees
# every word (no word dropout) and z only in its first state, so its greedy decodes are nearly all the same.
UNUSED_Z = """
model: {embedding_dim: 32, hidden_dim: 32, latent_dim: 16, bow_weight: 10.0, word_keep_rate: 1.0,
        z_every_step: false}
train: {batch_size: 32, max_steps: 20, log_every: 5, eval_every: 10, eval_batches: 3, lr: 0.05,
        kl_anneal: constant, kl_weight: 0.0}
"""
# What seqlvm itself writes to stderr during a sweep; anything else there is Ray's, Tune's or MLflow's.
OWN_LINES = ("starting sweep ", "objective: ", "Ray's and MLflow's output: ", "trial ", "evaluating the best trial ")


def test_a_sweep_whose_decodes_ignore_z_crowns_no_champion_and_its_console_is_seqlvms(ray_session, shakespeare,
                                                                                       tmp_path):
    """The default collapse guard on real trials: the best (and only) trial's mutual information clears the old
    0.5-nat rule, but its posterior decodes are alike, so it is penalised, and the version registered from it is
    not champion, the sweep saying why in one line. The sweep runs as the program does, with the default (quiet)
    console: seqlvm's lines only, well under 80, Ray's and MLflow's output in the sweep's log file."""
    config = tmp_path / "sweep.yaml"
    config.write_text(UNUSED_Z)
    workdir = tmp_path / "runs"
    uri = tracking.resolve_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}", workdir)  # not the exported one
    args = sweep_args(shakespeare, config, workdir, "guarded", "--num-samples", "1", "--scheduler", "none",
                      "--min-active-units", "0", "--samples", "1", "--tracking-uri", uri,
                      "--address", ray_session.get_runtime_context().gcs_address)
    done = subprocess.run([sys.executable, "-m", "seqlvm.cli", *args], capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    lines = done.stderr.splitlines() + done.stdout.splitlines()
    assert len(lines) < 60, "\n".join(lines)
    assert [line for line in done.stderr.splitlines() if not line.startswith(OWN_LINES)] == []
    assert "TrainingReport(" not in done.stdout + done.stderr and "RayTrainWorker" not in done.stdout
    log = workdir / "tune" / "guarded" / "sweep.log"
    assert f"output: {log}" in done.stderr and "TrainingReport(" in log.read_text()  # diverted, not lost
    assert "active units >= 0" not in done.stderr  # a minimum of 0 checks nothing
    assert "collapse guard: mutual info >= 0.5, decode distinct >= 0.3, decode f1 gain >= 0.05" in done.stderr
    last = [line for line in done.stderr.splitlines() if line.startswith("trial ") and "step 20/20" in line]
    assert len(last) == 1 and "rejected" in last[0] and "nearly all alike" in last[0]  # the progress says why
    assert ("version 1 is not champion: its latent is unused (its posterior decodes are nearly all alike"
            in done.stdout)

    client = tracking.client(uri)
    assert registry.current_alias_version(client, NAME) is None
    version = client.get_model_version(NAME, "1")
    assert json.loads(version.tags["seqlvm.collapse_guard"])["min_decode_distinct"] == 0.3
    assert float(version.tags["valid.mutual_info"]) > 0.5  # the old default would have crowned it
    assert float(version.tags["valid.decode_distinct"]) < 0.3 and "test.decode_distinct" in version.tags
    parent = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id],
                                "tags.`seqlvm.kind` = 'sweep'")[0]
    assert parent.data.params["guard.min_mutual_info"] == "0.5" and "collapse guard" in parent.data.params[
        "objective"]
    trial = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv")).iloc[0]
    assert bool(trial["collapsed"]) and trial["objective"] >= COLLAPSE_PENALTY
    assert trial["valid_mutual_info"] > 0.5 and trial["valid_decode_distinct"] < 0.3


def test_every_trials_metrics_arrive_once_after_the_tracking_server_was_down(ray_session, shakespeare, tmp_path):
    """A sweep's trials end as `seqlvm train` ends a run (TrackedRun): what their last checkpoint holds undelivered
    reaches MLflow. A real `mlflow server` is stopped once the first trial's run is open (its dataset input, logged
    last; its workers send everything after that), and started again once that trial's last checkpoint is
    committed, holding the metrics the outage kept back. At the end, every trial has every step's metrics, once."""
    from seqlvm.checkpoint import read_checkpoint
    from seqlvm.cluster.local_cluster import free_port, start_mlflow

    port, server_root = free_port(), tmp_path / "mlflow"
    server_root.mkdir()
    uri = f"http://127.0.0.1:{port}"
    servers = [start_mlflow(server_root, port)]
    config = tmp_path / "sweep.yaml"
    config.write_text(TINY_SWEEP)
    sweep = tmp_path / "runs" / "tune" / "outage"
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "seqlvm.cli", "tune", "--data", str(shakespeare), "--config", str(config),
             "--workdir", str(tmp_path / "runs"), "--name", "outage", "--num-samples", "2", "--max-concurrent", "1",
             "--scheduler", "none", "--no-register", "--samples", "0", "--tracking-uri", uri,
             "--address", ray_session.get_runtime_context().gcs_address],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = tracking.client(uri)

    def first_trial_opened() -> bool:  # TrackedRun.open's last call logs the dataset input; workers send the rest
        assert driver.poll() is None, log_path.read_text()[-3000:]
        runs = _child_runs(uri, "outage")
        return bool(runs) and bool(client.get_run(runs[0].info.run_id).inputs.dataset_inputs)

    try:
        wait_for(first_trial_opened, 400, "the first trial's opened run", log=log_path)
        os.killpg(servers[-1].pid, signal.SIGKILL)
        servers[-1].wait()
        last = wait_for(lambda: [d for d in sweep.glob("train/*") if committed_checkpoint(d) == "checkpoint_00000008"],
                        400, "the first trial's last checkpoint", log=log_path)[0] / "checkpoint_00000008"
        held_back = {(key, step) for key, _, _, step in read_checkpoint(last / "model.pt")["pending_metrics"]}
        assert {("train/nll_bound", 8), ("valid/nll_bound", 8)} <= held_back  # the outage kept them back
        servers.append(start_mlflow(server_root, port))
        assert driver.wait(timeout=600) == 0, log_path.read_text()[-3000:]
        runs = _child_runs(uri, "outage")
        assert len(runs) == 2
        for run in runs:
            for key, steps in (("train/nll_bound", [2, 4, 6, 8]), ("valid/nll_bound", [4, 8])):
                logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
                assert logged == steps, (run.data.tags["seqlvm.trial_id"], key, logged)
            assert run.info.status == "FINISHED" and run.data.tags["seqlvm.outcome"] == "finished"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
