"""End to end on real Ray and a real SQLite-backed MLflow: prepare the built-in corpus, train with 2 Ray Train
workers, read the MLflow run back, resume, evaluate and sample through the CLI."""
from __future__ import annotations

import threading
import time

import pytest

from pipelines.vocab import Vocab
from seqlvm import cli, tracking
from seqlvm.checkpoint import load_model
from seqlvm.training import TrainRequest, run_training

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

TINY = ["model.embedding_dim=32", "model.hidden_dim=32", "train.batch_size=32", "train.log_every=2",
        "train.eval_every=4", "train.eval_batches=3", "train.final_iw_samples=3"]


@pytest.fixture(scope="module")
def trained(ray_session, shakespeare_small_splits, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    request = TrainRequest(data_dir=str(shakespeare_small_splits), overrides=TINY + ["model.latent_dim=4"], workers=2,
                           max_steps=6, workdir=str(workdir), name="e2e", experiment="e2e")
    return request, run_training(request)


def test_training_logs_metrics_params_checkpoint_and_figures(trained):
    request, result = trained
    client = tracking.client(result.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "e2e"
    assert run.data.params["model.latent_dim"] == "4" and run.data.params["workers"] == "2"
    for key in ("train/elbo", "train/kl", "train/kl_weight", "train/nll_bound", "train/ppl_bound",
                "valid/elbo", "valid/nll_bound", "valid/ppl_bound", "test/iw_nll", "test/active_units"):
        assert key in run.data.metrics, key
    steps = [m.step for m in client.get_metric_history(result.mlflow_run_id, "valid/nll_bound")]
    assert steps == [4, 6]
    assert run.data.metrics["test/iw_nll"] <= run.data.metrics["test/nll_bound"] + 1e-3
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "figures")}
    assert {"figures/learning_curves.png", "figures/kl_and_weight.png"} <= artifacts


def test_checkpoint_from_mlflow_loads_and_samples_vocabulary_words(trained, shakespeare_small_splits):
    _, result = trained
    loaded = load_model(f"runs:/{result.mlflow_run_id}/checkpoint", result.tracking_uri)
    model, vocab = loaded.model, loaded.data.vocab
    assert loaded.payload["step"] == 6 and model.config.latent_dim == 4
    assert vocab.words == Vocab.load(shakespeare_small_splits / "vocab.json").words
    assert loaded.data.location == str(shakespeare_small_splits) and loaded.data.tokenisation["tokenizer"] == "regex"
    ids = model.sample_prior(5, greedy=False, max_len=15)
    words = [w for row in ids for w in vocab.decode(row)]
    assert words and set(words) <= set(vocab.words)


def test_resuming_a_run_continues_the_same_mlflow_run(trained):
    request, first = trained
    request.max_steps = 10
    second = run_training(request)
    assert second.mlflow_run_id == first.mlflow_run_id
    client = tracking.client(second.tracking_uri)
    steps = [m.step for m in client.get_metric_history(second.mlflow_run_id, "valid/nll_bound")]
    assert steps == [4, 6, 8, 10]
    kl_steps = [m.step for m in client.get_metric_history(second.mlflow_run_id, "train/kl_weight")]
    assert kl_steps == sorted(set(kl_steps))  # no step logged twice
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert len(runs) == 1


def test_cli_evaluate_and_sample_print_tables(trained, capsys):
    _, result = trained
    assert cli.main(["evaluate", result.checkpoint_dir, "--samples", "4", "--limit", "64"]) == 0
    table = capsys.readouterr().out
    for name in ("elbo", "kl", "nll_bound", "iw_nll", "ppl_bound", "active_units"):
        assert name in table
    assert cli.main(["sample", result.checkpoint_dir, "--n", "2", "--sentence", "my lord , the king",
                     "--between", "good morrow", "the king is dead", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert "samples from the prior" in text and "homotopy" in text and "decoded from the posterior" in text


def test_unknown_config_key_fails_before_starting_anything(shakespeare, tmp_path, capsys):
    assert cli.main(["train", "--data", str(shakespeare), "--workdir", str(tmp_path), "model.nope=1"]) == 2
    assert "unknown config key 'model.nope'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_larger_than_the_cluster_is_announced(ray_session):
    from seqlvm.cluster.ceiling import WorkerGroup
    from seqlvm.cluster.ray_runtime import capacity_notice, capacity_watch

    cpus = ray_session.cluster_resources()["CPU"]
    assert capacity_notice(WorkerGroup.of(1, 1, use_gpu=False)) is None
    assert f"a node with {cpus + 1:g} CPU for each worker" in capacity_notice(WorkerGroup.of(1, cpus + 1, False))
    assert (f"waiting for {2 * cpus:g} CPU for 2 workers: the cluster has {cpus:g}"
            in capacity_notice(WorkerGroup.of(2, cpus, False)))
    assert "a node with 1 CPU, 1 GPU for each worker" in capacity_notice(WorkerGroup.of(1, 1, use_gpu=True))

    said = []
    with capacity_watch(WorkerGroup.of(1, cpus + 1, False), said.append, every_s=0.05):
        deadline = time.time() + 30
        while len(said) < 3 and time.time() < deadline:  # it keeps saying what is missing
            time.sleep(0.05)
        assert len(said) >= 3 and all("for each worker" in line for line in said)  # said while the run waits
    # and stopped once the run no longer waits: nothing is left to say more
    assert not [thread for thread in threading.enumerate() if thread.name == "capacity-watch"]
    quiet = []
    with capacity_watch(WorkerGroup.of(1, 1, False), quiet.append, every_s=0.05):
        pass
    assert quiet == []


@pytest.fixture
def autoscaler_maximum(ray_session, tmp_path, capsys):
    """The session's Ray as the head of an autoscaling cluster that can add one more 4-CPU node: its maximum is
    reported to the GCS by `seqlvm cluster report-max` from a launcher config (as on a `ray up` head), and
    removed afterwards."""
    import ray._raylet

    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("max_workers: 1\nhead_node_type: head\navailable_node_types:\n"
                      "  head: {resources: {CPU: 4}}\n  cpu4: {resources: {CPU: 4}, max_workers: 1}\n")
    address = ray_session.get_runtime_context().gcs_address
    assert cli.main(["cluster", "report-max", "--autoscaling-config", str(config), "--address", address]) == 0
    assert "it grows to at most 8 CPU, 0 GPU" in capsys.readouterr().out
    yield address
    ray_session._private.worker.global_worker.gcs_client.internal_kv_del(
        ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), False,
        ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())


def test_a_run_beyond_the_autoscalers_maximum_is_refused_before_anything_is_written(
        autoscaler_maximum, shakespeare, tmp_path, capsys):
    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.search_experiments()  # creates the store, whose migration logs would be lines on stderr
    capsys.readouterr()
    common = ["--data", str(shakespeare), "--workdir", str(tmp_path), "--address", autoscaler_maximum,
              "--max-steps", "4"]
    assert cli.main(["train", *common, "--workers", "3", "--cpus-per-worker", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("3 workers x 4 CPU need 12 CPU, but this cluster's autoscaler grows it to at most 8 CPU; "
                        "lower --workers or --cpus-per-worker") and "\n" not in err
    assert cli.main(["tune", *common, "--num-samples", "2", "--scheduler", "none", "--cpus-per-worker", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "each worker needs 6 CPU on one node, but no node this cluster's autoscaler can start has that" in err
    assert "\n" not in err
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == [] and not (tmp_path / "ray").exists()


def test_an_error_a_retry_cannot_fix_ends_the_run_at_once_on_every_worker(ray_session, shakespeare, tmp_path):
    """The hybrid VAE's fixed-size decoder refuses texts longer than model.max_length. The check before Ray trains
    one step on the first sentences, short enough; a later batch is not: the workers stop together at that step,
    once, and the MLflow run is FAILED with the reason."""
    from pipelines.dataset import PreparedDataset
    from pipelines.errors import SeqlvmError
    from seqlvm.training.request import PREFLIGHT_SEQUENCES

    longest_checked = max(len(s) for s in PreparedDataset.open(shakespeare).read("train", PREFLIGHT_SEQUENCES))
    request = TrainRequest(data_dir=str(shakespeare), model_name="hybrid-vae", workers=2, max_steps=40,
                           overrides=["train.batch_size=16", f"model.max_length={longest_checked}",
                                      "train.eval_every=100"], workdir=str(tmp_path), name="too-long")
    with pytest.raises(SeqlvmError) as refused:
        run_training(request)
    reason = str(refused.value)
    # whichever worker met the long batch, the reason is its cause
    assert f"hybrid-vae reads texts of at most {longest_checked} tokens" in reason
    # "stopped", not "failed": the workers returned with the reason instead of raising, which is what Ray
    # Train retries
    assert "training run too-long stopped: step" in reason and "not retried" in reason and "\n" not in reason
    client = tracking.client(tracking.resolve_tracking_uri(None, tmp_path))
    run = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id])[0]
    assert run.info.status == "FAILED" and "not retried" in run.data.tags["seqlvm.failure"]
