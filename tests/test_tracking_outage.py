"""Metrics on their way to a real MLflow server (`mlflow server` on 127.0.0.1) that goes down and comes back:
nothing is lost, nothing is sent twice, and a worker restarted from a checkpoint does not duplicate the steps the
previous attempt had delivered."""
from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from seqlvm import tracking
from seqlvm.cluster.local_cluster import free_port, start_mlflow
from seqlvm.tracking import WORKER_HTTP_SETTINGS, MetricOutbox

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(tracking URI, start(), stop()) of a server that a test can stop and start again on the same port/store."""
    root, port, running = tmp_path_factory.mktemp("mlflow"), free_port(), []

    def start():
        running.append(start_mlflow(root, port))

    def stop():
        process = running.pop()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    with pytest.MonkeyPatch.context() as patch:
        for key, value in WORKER_HTTP_SETTINGS.items():
            patch.setenv(key, value)
        start()
        yield f"http://127.0.0.1:{port}", start, stop
        while running:
            stop()


def steps_of(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, key))


def new_run(uri: str) -> str:
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("outage") or client.get_experiment(client.create_experiment("outage"))
    return client.create_run(experiment.experiment_id).info.run_id


def test_metrics_logged_while_the_server_is_down_arrive_when_it_returns(server):
    uri, start, stop = server
    run_id = new_run(uri)
    outbox = MetricOutbox(uri, run_id)
    outbox.add({"train/loss": 3.0}, 10)
    assert outbox.flush() and outbox.pending == []

    stop()
    for step in (20, 30):
        outbox.add({"train/loss": 3.0 - step / 100, "valid/loss": 4.0}, step)
    assert not outbox.flush(), "a flush with the server down reports failure instead of raising"
    assert len(outbox.pending) == 4 and outbox.last_error
    start()
    assert outbox.flush() and outbox.pending == []
    assert steps_of(uri, run_id, "train/loss") == [10, 20, 30]
    assert steps_of(uri, run_id, "valid/loss") == [20, 30]


def test_sending_again_and_replaying_after_a_restart_duplicate_nothing(server):
    uri, _, _ = server
    run_id = new_run(uri)
    first = MetricOutbox(uri, run_id)
    for step in (10, 20, 30, 40):
        first.add({"train/loss": 1.0 / step}, step)
    saved_in_checkpoint = [list(m) for m in first.pending if m[3] <= 20]  # the checkpoint at step 20
    assert first.flush()  # the attempt delivered up to step 40, then its worker died

    # The restarted worker resends what its checkpoint held (identical entries) and replays steps 30-50.
    second = MetricOutbox(uri, run_id, saved_in_checkpoint, replay_after=20)
    for step in (30, 40, 50):
        second.add({"train/loss": 2.0 / step}, step)
    assert second.flush()
    assert steps_of(uri, run_id, "train/loss") == [10, 20, 30, 40, 50]
    values = {m.step: m.value for m in tracking.client(uri).get_metric_history(run_id, "train/loss")}
    assert values[40] == pytest.approx(1.0 / 40) and values[50] == pytest.approx(2.0 / 50)
    assert max(Counter(steps_of(uri, run_id, "train/loss")).values()) == 1


def test_runs_that_log_the_same_new_dataset_at_once_each_get_it(server, tmp_path):
    """Two jobs training on one corpus open their runs at once: both insert the new dataset, and the server refuses
    the loser on its unique constraint. Each run must still get its input (seen on the cluster, where one of two
    concurrent jobs failed at its start)."""
    import dataclasses
    import threading

    from pipelines.dataset import PreparedDataset
    from pipelines.text import TextOptions, prepare_text
    from seqlvm.tracking.datasets import log_training_dataset
    uri = server[0]
    (tmp_path / "corpus.txt").write_text("".join(f"line {i} of the corpus .\n" for i in range(60)))
    prepare_text(str(tmp_path / "corpus.txt"), tmp_path / "data", TextOptions(layout="lines"))
    prepared, failures = PreparedDataset.open(tmp_path / "data"), []
    for round_ in range(6):
        dataset = dataclasses.replace(prepared, fingerprint=f"round-{round_}")  # a dataset new to the store
        runs = [new_run(uri) for _ in range(4)]

        def log(run_id: str) -> None:
            try:
                log_training_dataset(uri, run_id, dataset)
            except Exception as exc:  # noqa: BLE001 - the assertion below names it
                failures.append(str(exc).splitlines()[0])

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client = tracking.client(uri)
        assert not failures and all(client.get_run(run_id).inputs.dataset_inputs for run_id in runs), failures
