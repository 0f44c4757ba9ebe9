"""The cluster path on a real multi-process cluster: `seqlvm cluster up` starts a head (`ray start --head` on
127.0.0.1, free ports, token authentication), a worker node and an `mlflow server`; jobs go in through
`seqlvm submit` and through `ray job submit` by hand; a Ray Train worker is killed by its PID mid-run and the run
must finish from its last checkpoint, in the same MLflow run, with every step's metrics exactly once. The card's
central use runs here too: a sweep submitted as a job registers its champion on the cluster's MLflow server, and
the champion loads in a fresh process from the code it carries."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import committed_checkpoint, run_without_checkout, wait_for

from pipelines.dataset import PreparedDataset
from pipelines.epochs import Batching, EpochPlanner
from seqlvm import tracking
from seqlvm.cluster import local_cluster
from seqlvm.cluster.local_cluster import dashboard_json
from seqlvm.tracking import registry

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "rnnlm", "--no-final-eval", "model.embedding_dim=32", "model.hidden_dim=32",
        "train.batch_size=16", "train.log_every=10", "train.eval_every=40", "train.eval_batches=2"]
TINY_VAE = ["model.embedding_dim=32", "model.hidden_dim=32", "model.latent_dim=4", "train.batch_size=32",
            "train.log_every=10", "train.eval_every=10", "train.eval_batches=2"]
SWEEP_MODEL = "cluster-sweep-vae"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    state = local_cluster.up(root, head_cpus=4, worker_cpus=2)
    yield state
    local_cluster.down(root)
    assert not any(local_cluster.running(pid) for pid in state.pids.values())


def client_env(state) -> dict[str, str]:
    # The conftest turns token authentication off for the in-process Ray; this cluster has it on. MLflow's
    # set_registry_uri, called by earlier tests in this process, exports MLFLOW_REGISTRY_URI: the cluster's
    # server is its registry too.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"}
    return {**env, **state.client_env()}


def seqlvm(state, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqlvm.cli", *args], env=client_env(state), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def submitted_sweep(cluster, shakespeare_small_splits, tmp_path_factory):
    """(the `seqlvm submit --follow` process, the files of its stdout and stderr, the sweep's workdir) of the card's
    central use: a 2-trial sweep sent as a job, not waited for here. The jobs test asks for it, so that the sweep
    runs beside its two jobs, which mostly wait on Ray's processes starting; one trial at a time, so that its
    worker and theirs leave the cluster CPUs for their data's read tasks."""
    root = tmp_path_factory.mktemp("cluster-sweep")
    stdout, stderr = root / "submit.out", root / "submit.err"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        submitting = subprocess.Popen(
            [sys.executable, "-m", "seqlvm.cli", "submit", "--follow", "--", "seqlvm", "tune", "--data",
             str(shakespeare_small_splits), "--num-samples", "2", "--max-concurrent", "1", "--max-steps", "20",
             "--scheduler", "none", "--name", "cluster-sweep", "--registered-name", SWEEP_MODEL, "--workdir",
             str(root / "work"), "--iw-samples", "2", "--samples", "1",
             "--allow-collapsed", *TINY_VAE],  # 20 steps teach a latent little: no collapse guard
            env=client_env(cluster), cwd=REPO, stdout=out, stderr=err, text=True)
    yield submitting, stdout, stderr, root / "work"
    if submitting.poll() is None:
        submitting.kill()
        submitting.wait()


def train_worker_pids(state, submission_id: str) -> list[int]:
    """PIDs of a job's live Ray Train workers, from the State API."""
    job_id = dashboard_json(state, f"/api/jobs/{submission_id}")["job_id"]
    if job_id is None:  # the job's driver has not started yet
        return []
    query = ("/api/v0/actors?filter_keys=class_name&filter_predicates=%3D&filter_values=RayTrainWorker"
             f"&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
             f"&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}")
    return [actor["pid"] for actor in dashboard_json(state, query)["data"]["result"]["result"]]


def mlflow_run(state, run_name: str):
    client = tracking.client(state.tracking_uri)
    experiment = client.get_experiment_by_name("seqlvm")
    runs = client.search_runs([experiment.experiment_id], f"tags.`seqlvm.run_name` = '{run_name}'")
    assert len(runs) == 1, "one MLflow run per training run, restarts included"
    return client, runs[0]


def test_servers_bind_loopback_and_the_jobs_api_needs_the_token(cluster):
    with pytest.raises(urllib.error.HTTPError) as refused:
        dashboard_json(cluster, "/api/jobs/", token=False)
    assert refused.value.code in (401, 403)
    assert isinstance(dashboard_json(cluster, "/api/jobs/"), list)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the address of the default route
        probe.connect(("192.0.2.1", 9))  # UDP: nothing is sent
        outside = probe.getsockname()[0]
    if outside.startswith("127."):
        pytest.skip("this machine has no address other than loopback to probe")
    for url in (cluster.dashboard_url, cluster.tracking_uri):
        # refused at once: the port is open on loopback only (a timeout would not tell that apart from a filter)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, int(url.rsplit(":", 1)[1])), timeout=60).close()


@pytest.mark.usefixtures("submitted_sweep")  # the sweep runs meanwhile
def test_jobs_by_cli_and_by_hand_and_a_killed_train_worker(cluster, shakespeare, tmp_path):
    """Two jobs at once: a short run sent with `ray job submit` by hand, and a 2-worker run sent with `seqlvm
    submit` whose worker is killed by PID after its first committed checkpoint. The killed run logs its batches
    (`train.batch_log`): after the restart each worker continues its epoch at its next unseen batch."""
    by_hand = subprocess.Popen(
        [local_cluster.executable("ray"), "job", "submit", "--address", cluster.dashboard_url, "--working-dir",
         str(REPO), "--submission-id", "by-hand", "--", sys.executable, "-m", "seqlvm.cli", "train", "--data",
         str(shakespeare), "--workers", "1", "--max-steps", "20", "--workdir", str(tmp_path / "by-hand"),
         "--name", "by-hand", *TINY], env=client_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    max_steps = 240
    submitted = seqlvm(cluster, "submit", "--submission-id", "fault", "--", "seqlvm", "train", "--data",
                       str(shakespeare), "--workers", "2", "--max-steps", str(max_steps), "--workdir",
                       str(tmp_path / "fault"), "--name", "fault", *TINY, "train.batch_log=true")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted job fault" in submitted.stdout

    # Ray Train records a checkpoint as committed in its manager snapshot once every worker has reported it (a
    # checkpoint folder can exist earlier): kill after that, or the restart would begin from step 0.
    train_dir = tmp_path / "fault" / "ray" / "fault"

    # The State API is slow on a loaded machine: the workers are paused the moment they are found, so the run
    # cannot end while the test looks; they then train only until their first checkpoint is committed.
    def both_workers() -> list[int]:
        status = dashboard_json(cluster, "/api/jobs/fault")["status"]
        assert status == "RUNNING" or status == "PENDING", seqlvm(cluster, "jobs", "logs", "fault").stdout[-3000:]
        found = train_worker_pids(cluster, "fault")
        return found if len(found) == 2 else []

    pids = wait_for(both_workers, 400, "the train workers", poll=0.5)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    if not committed_checkpoint(train_dir):
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: committed_checkpoint(train_dir), 400, "a committed checkpoint", poll=0.05)
    os.kill(pids[-1], signal.SIGKILL)
    for pid in pids[:-1]:
        os.kill(pid, signal.SIGCONT)  # Ray Train stops it and restarts the group from the checkpoint

    waited = seqlvm(cluster, "jobs", "status", "fault", "--wait")
    logs = seqlvm(cluster, "jobs", "logs", "fault").stdout
    assert waited.returncode == 0, logs[-3000:]
    assert "fault: SUCCEEDED" in waited.stdout
    client, run = mlflow_run(cluster, "fault")
    assert run.info.status == "FINISHED"
    resumed_from = run.data.metrics["train/resumed_from_step"]
    assert f"resuming from step {resumed_from:.0f}" in logs
    assert 40 <= resumed_from < max_steps and resumed_from % 40 == 0
    for key, every in (("train/nll_bound", 10), ("valid/nll_bound", 40)):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert max(Counter(steps).values()) == 1, f"{key}: a step logged twice"
        assert sorted(steps) == list(range(every, max_steps + 1, every)), f"{key}: a step lost"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoint", "figures"}
    assert_exact_resume(shakespeare, tmp_path / "fault" / "logs" / "fault.batches.jsonl", int(resumed_from),
                        max_steps)

    output, _ = by_hand.communicate(timeout=600)
    assert by_hand.returncode == 0, output[-3000:]
    # the job's console: the workers' progress echoed by its driver, Ray Train's reports in the run's log file
    assert "logs/by-hand.log (--verbose shows it here)" in output and "step     20 | valid nll bound" in output
    assert "TrainingReport(" not in output and "(RayTrainWorker" not in output
    client, run = mlflow_run(cluster, "by-hand")  # logged to the cluster's MLflow server, from the nodes' env
    assert run.info.status == "FINISHED" and run.data.params["workers"] == "1"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/nll_bound")) == [10, 20]
    listed = seqlvm(cluster, "jobs", "list")
    assert listed.returncode == 0 and "by-hand" in listed.stdout and "SUCCEEDED" in listed.stdout
    missing = seqlvm(cluster, "jobs", "status", "no-such-job")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no-such-job" in missing.stderr


def assert_exact_resume(data: Path, batch_log: Path, resumed_from: int, max_steps: int) -> None:
    """The batches each worker trained on, from the batch log: those of the steps up to the checkpoint, then those
    the restarted workers took, are exactly the epoch plan's first `max_steps` batches of that worker: no batch
    after the checkpoint repeats one before it, and none is lost."""
    lines = [json.loads(line) for line in batch_log.read_text().splitlines()]
    before = [line for line in lines if line["step"] <= resumed_from]
    # lines the killed attempt wrote after its checkpoint are of steps the restarted workers took again
    first_attempt = {line["pid"] for line in before}
    after = [line for line in lines if line["step"] > resumed_from and line["pid"] not in first_attempt]
    assert after, "no batches logged after the restart"
    taken = Counter((line["rank"], line["step"]) for line in before + after)
    assert set(taken) == {(rank, step) for rank in (0, 1) for step in range(1, max_steps + 1)}
    assert max(taken.values()) == 1
    assert {line["epoch"] for line in before + after} == {0}  # 240 steps are within the first epoch
    planner = EpochPlanner(PreparedDataset.open(data).padded_lengths("train"), Batching(16, 20), 2)
    plan = planner.plan(0)
    every_row = sorted((s, r) for s, lengths in enumerate(planner.lengths) for r in range(len(lengths)))
    for rank in (0, 1):
        planned = [[[window.shard, window.start + int(i)] for i in batch] for window, _ in
                   plan.remaining(rank, 0, planner.counts) for batch in planner.batches(window, 0)]
        logged = sorted((line for line in before + after if line["rank"] == rank), key=lambda line: line["step"])
        assert [line["rows"] for line in logged] == planned[:max_steps]
        seen_before = {tuple(row) for line in logged if line["step"] <= resumed_from for row in line["rows"]}
        assert not seen_before & {tuple(row) for line in logged if line["step"] > resumed_from
                                  for row in line["rows"]}
    # the rest of the plan holds the epoch's other sequences: every one once
    assert sorted(tuple(row) for rank in (0, 1) for window, _ in plan.remaining(rank, 0, planner.counts)
                  for batch in planner.batches(window, 0)
                  for row in [(window.shard, window.start + int(i)) for i in batch]) == every_row


def test_a_job_runs_the_code_it_carries_not_the_folder_it_starts_in(cluster):
    """A job without a working dir starts in its node's current folder: a node started from a checkout would make
    `python -m seqlvm.cli` import that checkout and hide a job that cannot run from its `py_modules`."""
    code = ("import os, pipelines, seqlvm, tune; "
            "print('FROM', os.getcwd(), seqlvm.__file__, pipelines.__file__, tune.__file__)")
    job = seqlvm(cluster, "submit", "--follow", "--", "python", "-c", code)
    assert job.returncode == 0, job.stdout[-3000:]
    cwd, *files = next(line for line in job.stdout.splitlines() if line.startswith("FROM ")).split()[1:]
    assert Path(cwd) == Path(cluster.root)
    assert all("/runtime_resources/py_modules_files/_ray_pkg_" in file for file in files), files


def test_a_submitted_sweep_registers_a_champion_that_loads_from_its_own_code(cluster, submitted_sweep,
                                                                              shakespeare_small_splits, tmp_path):
    """The card's central use: a sweep sent with `seqlvm submit`, its best checkpoint registered as champion on the
    cluster's MLflow server, loaded by `mlflow.pyfunc` in a fresh process that can import seqlvm only from the
    code the registered model carries, and sampled."""
    submitting, stdout, _, work = submitted_sweep
    name = SWEEP_MODEL
    assert submitting.wait(timeout=600) == 0, stdout.read_text()[-3000:]
    assert "version 1 is the new champion" in stdout.read_text()

    # What the job saw: the nodes' MLflow server (no store of its own in the workdir) and the folders it was given.
    client = tracking.client(cluster.tracking_uri)
    champion = registry.current_alias_version(client, name)
    assert champion is not None and champion.version == "1"
    sweep_run = client.get_run(client.get_run(champion.run_id).data.tags["mlflow.parentRunId"])
    assert sweep_run.info.status == "FINISHED" and sweep_run.data.tags["seqlvm.registered_version"] == "1"
    # the version is the trial with the best objective in the sweep's own table
    with tempfile.TemporaryDirectory() as folder:
        table = list(csv.DictReader(open(client.download_artifacts(sweep_run.info.run_id, "trials.csv", folder))))
    assert len(table) == 2 and table[0]["objective"] != table[1]["objective"]
    assert champion.tags["seqlvm.trial_id"] == min(table, key=lambda row: float(row["objective"]))["trial"]
    assert (work / "tune" / "cluster-sweep" / "seqlvm_sweep.json").is_file()
    assert not (work / "mlflow.db").exists()

    loaded = run_without_checkout(f"""
        import json, mlflow, pandas as pd
        mlflow.set_tracking_uri({cluster.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/{name}@champion")
        out = model.predict(pd.DataFrame({{"sentence": ["", "my lord , the king is here ."]}}),
                            params={{"seed": 1, "max_len": 12}})
        import pipelines, seqlvm
        print(json.dumps({{"files": [seqlvm.__file__, pipelines.__file__], "source": list(out["source"]),
                          "output": list(out["output"]), "ray": "ray" in sys.modules}}))
    """, cwd=tmp_path, env=client_env(cluster))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert [Path(f).parts[-3:-1] for f in result["files"]] == [("code", "seqlvm"), ("code", "pipelines")]
    assert not any(Path(f).is_relative_to(REPO) for f in result["files"])
    assert result["source"] == ["prior", "posterior"] and not result["ray"]  # serving needs no Ray
    words = set(json.loads((shakespeare_small_splits / "vocab.json").read_text()))
    assert all(text and set(text.split()) <= words for text in result["output"]), result["output"]


def test_a_run_beyond_the_reported_maximum_is_refused_on_the_cluster(cluster, shakespeare, tmp_path):
    """The cluster's own shape (a 4-CPU head, at most one 2-CPU worker) in a launcher config, reported by `seqlvm
    cluster report-max` from another process through the token-authenticated GCS, as a `ray up` head does."""
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("max_workers: 1\nhead_node_type: head\navailable_node_types:\n"
                      "  head: {resources: {CPU: 4}}\n  worker: {resources: {CPU: 2}, max_workers: 1}\n")
    reported = seqlvm(cluster, "cluster", "report-max", "--autoscaling-config", str(config),
                      "--address", cluster.gcs_address, timeout=120)
    assert reported.returncode == 0 and "it grows to at most 6 CPU, 0 GPU" in reported.stdout, reported.stderr
    refused = seqlvm(cluster, "train", "--data", str(shakespeare), "--workdir", str(tmp_path / "runs"),
                     "--address", cluster.gcs_address, "--workers", "4", "--cpus-per-worker", "2", "--max-steps",
                     "4", *TINY, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "seqlvm: error: 4 workers x 2 CPU need 8 CPU, but this cluster's autoscaler grows it to at most 6 CPU; "
        "lower --workers or --cpus-per-worker"), refused.stderr
    assert not (tmp_path / "runs" / "ray").exists()


def test_preparation_on_the_cluster_gives_the_dataset_of_one_process(cluster, shakespeare, tmp_path):
    """`seqlvm prepare --address` runs its tasks on the cluster's nodes and writes the dataset the session's
    in-process preparation wrote from the same input and options."""
    out = tmp_path / "prepared-on-cluster"
    done = seqlvm(cluster, "prepare", "text", "--source", "builtin:shakespeare", "--out", str(out),
                  "--vocab-size", "2000", "--max-length", "30", "--address", cluster.gcs_address)
    assert done.returncode == 0, done.stderr[-3000:]
    on_cluster, local = (json.loads((root / "manifest.json").read_text()) for root in (out, shakespeare))
    assert (out / "vocab.json").read_bytes() == (shakespeare / "vocab.json").read_bytes()
    assert on_cluster["splits"] == local["splits"] and on_cluster["fingerprint"] == local["fingerprint"]
    for shard in local["splits"]["train"]["shards"]:
        assert pq.read_table(out / shard).equals(pq.read_table(shakespeare / shard))
    tasks = dashboard_json(cluster, "/api/v0/tasks?limit=10000&detail=true")["data"]["result"]["result"]
    nodes = {task["node_id"] for task in tasks if "Map(task)" in task.get("name", "") and task.get("node_id")}
    assert len(nodes) == 2, "the preparation's tasks ran on both of the cluster's nodes"
