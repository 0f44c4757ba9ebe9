"""The model registry on a real SQLite MLflow store: versions, the champion rule, promote/rollback, loading a
version with the plain MLflow client, and registry URIs in the CLI. No Ray: checkpoints come from a small
model built in-process."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.vocab import Vocab
from seqlvm import cli, tracking
from seqlvm.checkpoint import save_checkpoint
from seqlvm.models import build_model
from seqlvm.tracking import registry

NAME = "tiny-vae-shakespeare"


def make_checkpoint(folder, data_dir, seed: int):
    import torch

    torch.manual_seed(seed)
    data = DataDescription.of_dataset(PreparedDataset.open(data_dir))
    model = build_model("sentence-vae", {"embedding_dim": 16, "hidden_dim": 16, "latent_dim": 4}, data.input_size)
    folder.mkdir(parents=True)
    return save_checkpoint(folder, model, optimizer={"state": {}}, step=1, config={}, data=data.to_dict())


@pytest.fixture(scope="module")
def store(shakespeare, tmp_path_factory):
    """Three registered versions, registered as a sweep does, with valid NLL bounds 80, 85 and 79."""
    root = tmp_path_factory.mktemp("registry")
    uri = tracking.resolve_tracking_uri(f"sqlite:///{root / 'mlflow.db'}", root)
    experiment = tracking.ensure_experiment(uri, "registry-test", root)
    client = tracking.client(uri)
    decisions = []
    for i, value in enumerate([80.0, 85.0, 79.0]):
        run_id = client.create_run(experiment).info.run_id
        checkpoint = make_checkpoint(root / f"ckpt{i}", shakespeare, seed=i)
        version = registry.register_checkpoint(uri, run_id, checkpoint, NAME, {
            "seqlvm.data_fingerprint": "fp", registry.COMPARED_METRIC: value}, {"source": "builtin:shakespeare"})
        decisions.append(registry.promote_if_better(client, NAME, version, value, "fp"))
    return uri, client, decisions


def test_champion_moves_only_to_a_better_version_on_the_same_data(store):
    uri, client, decisions = store
    assert [d.promoted for d in decisions] == [True, False, True]
    assert "does not beat" in decisions[1].reason
    assert str(registry.current_alias_version(client, NAME).version) == "3"
    other_data = registry.promote_if_better(client, NAME, "2", 1.0, "another-fingerprint")
    collapsed = registry.promote_if_better(client, NAME, "2", 1.0, "fp", collapse="mutual_info 0.1 nats < 0.5")
    assert not other_data.promoted and not collapsed.promoted
    assert "latent is unused (mutual_info 0.1 nats < 0.5)" in collapsed.reason
    assert str(registry.current_alias_version(client, NAME).version) == "3"


def test_a_version_using_its_latent_replaces_a_champion_that_does_not(store):
    _, client, _ = store
    champion = registry.current_alias_version(client, NAME).version
    try:
        worse = registry.promote_if_better(client, NAME, "2", 85.0, "fp",
                                           champion_collapse=lambda tags: "mutual_info 0.1 < 0.5")
        assert worse.promoted and "left its latent unused (mutual_info 0.1 < 0.5)" in worse.reason
    finally:
        registry.set_alias(client, NAME, champion)


def test_a_champion_without_the_compared_metric_is_not_compared(store):
    _, client, _ = store
    champion = registry.current_alias_version(client, NAME).version
    client.delete_model_version_tag(NAME, champion, registry.COMPARED_METRIC)
    try:
        decision = registry.promote_if_better(client, NAME, "2", 1.0, "fp")
        assert not decision.promoted and f"has no {registry.COMPARED_METRIC}" in decision.reason
        assert registry.current_alias_version(client, NAME).version == champion
    finally:
        client.set_model_version_tag(NAME, champion, registry.COMPARED_METRIC, "79.0")


def test_split_metrics_reads_a_versions_tags():
    tags = {"valid.kl": "2.5", "valid.mutual_info": "0.1", "test.kl": "9", "valid.note": "n/a", "seqlvm.x": "1"}
    assert registry.split_metrics(tags, "valid") == {"kl": 2.5, "mutual_info": 0.1}


def test_registered_version_loads_with_plain_mlflow_and_samples(store, shakespeare):
    uri, _, _ = store
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    request = pd.DataFrame({"sentence": ["", "", "my lord , the king is dead ."]})
    first = model.predict(request, params={"seed": 7, "max_len": 12})
    assert list(first["source"]) == ["prior", "prior", "posterior"]
    words = set(Vocab.load(shakespeare / "vocab.json").words)
    assert all(set(text.split()) <= words for text in first["output"])
    assert first["output"].str.len().sum() > 0
    again = model.predict(request, params={"seed": 7, "max_len": 12})
    assert list(again["output"]) == list(first["output"])  # seeded
    version = registry.current_alias_version(mlflow.MlflowClient(), NAME)
    assert version.run_id and version.tags["seqlvm.data_fingerprint"] == "fp"


def test_the_registered_model_answers_every_mode_as_the_operations_do(store):
    """encode, score, sample and reconstruct through the plain MLflow client, each equal to what
    `seqlvm.operations` (the service's code) answers for the same version; a bad mode or word is refused in one
    line."""
    from mlflow.exceptions import MlflowException

    from seqlvm.checkpoint import load_model
    from seqlvm.operations import ModelOperations
    uri, _, _ = store
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    operations = ModelOperations(load_model(f"models:/{NAME}/1", uri))
    sentences = ["my lord , the king is dead .", "the king is here ."]
    request = pd.DataFrame({"sentence": sentences})
    encoded = model.predict(request, params={"mode": "encode"})
    mean, variance = operations.encode(sentences)
    assert np.allclose([json.loads(m) for m in encoded["mean"]], mean, atol=1e-6)
    assert np.allclose([json.loads(v) for v in encoded["variance"]], variance, atol=1e-6)
    scored = model.predict(request, params={"mode": "score", "samples": 4, "seed": 2})
    expected = operations.score(sentences, samples=4, seed=2)
    assert list(scored["iw_ll"]) == pytest.approx(expected["iw_ll"]) and list(scored["samples"]) == [4, 4]
    assert (scored["iw_ll"] >= scored["elbo"] - 1e-4).all() and list(scored["steps"]) == [9, 6]
    sampled = model.predict(request, params={"mode": "sample", "seed": 3, "max_len": 6})
    assert list(sampled["source"]) == ["prior", "prior"]
    assert list(sampled["output"]) == operations.sample(2, seed=3, max_len=6)
    rebuilt = model.predict(request, params={"mode": "reconstruct", "max_len": 6})
    assert list(rebuilt["output"]) == operations.reconstruct(sentences, max_len=6)
    with pytest.raises(MlflowException, match="mode='nonsense'"):
        model.predict(request, params={"mode": "nonsense"})
    with pytest.raises(MlflowException, match="outside the model's vocabulary.*zyzzyva"):
        model.predict(pd.DataFrame({"sentence": ["the zyzzyva is here"]}), params={"mode": "score"})


def test_a_registered_version_is_linked_to_its_runs_logged_model(store):
    """What the MLflow UI follows: the run lists the logged model as its output (the runs table's Models column),
    the logged model names its run and the versions registered from it, and the version's source is the model."""
    _, client, _ = store
    version = client.get_model_version(NAME, "1")
    outputs = client.get_run(version.run_id).outputs.model_outputs
    assert len(outputs) == 1
    model = client.get_logged_model(outputs[0].model_id)
    assert model.source_run_id == version.run_id and model.status == "READY"
    assert version.source == f"models:/{model.model_id}"
    assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": NAME, "version": 1}]
    assert version.model_id in (None, model.model_id)  # MLflow's SQL registry does not store it; the source does


def test_weights_only_checkpoint_drops_the_optimizer(store, tmp_path):
    from seqlvm.checkpoint import load_model
    uri, _, _ = store
    loaded = load_model(f"models:/{NAME}/1", uri)
    assert "optimizer" not in loaded.payload and loaded.payload["step"] == 1 and loaded.model.config.latent_dim == 4


def test_cli_promote_rollback_list_show(store, capsys):
    uri, client, _ = store
    assert cli.main(["registry", "promote", NAME, "2", "--tracking-uri", uri]) == 0
    assert str(registry.current_alias_version(client, NAME).version) == "2"
    assert cli.main(["registry", "rollback", NAME, "--tracking-uri", uri]) == 0
    assert str(registry.current_alias_version(client, NAME).version) == "3"
    capsys.readouterr()
    assert cli.main(["registry", "list", "--tracking-uri", uri]) == 0
    listing = capsys.readouterr().out
    assert NAME in listing and "champion" in listing
    assert cli.main(["registry", "show", NAME, "--tracking-uri", uri]) == 0
    shown = capsys.readouterr().out
    assert "champion" in shown and "79" in shown and "85" in shown


def test_cli_registry_errors_are_one_line(store, capsys):
    uri, client, _ = store
    assert cli.main(["registry", "promote", NAME, "99", "--tracking-uri", uri]) == 2
    assert cli.main(["registry", "show", "no-such-model", "--tracking-uri", uri]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "version 99" in errors[0] and "no-such-model" in errors[1]
    assert str(registry.current_alias_version(client, NAME).version) == "3"  # nothing moved


def test_rollback_without_history_fails(store, capsys):
    uri, client, _ = store
    registry.set_alias(client, NAME, "1", alias="staging")
    assert cli.main(["registry", "rollback", NAME, "--alias", "staging", "--tracking-uri", uri]) == 2
    assert "no earlier staging" in capsys.readouterr().err


def test_cli_sample_and_evaluate_accept_registry_uris(store, capsys):
    uri, _, _ = store
    assert cli.main(["sample", f"models:/{NAME}@champion", "--n", "2", "--tracking-uri", uri]) == 0
    assert "samples from the prior" in capsys.readouterr().out
    assert cli.main(["evaluate", f"models:/{NAME}/2", "--samples", "2", "--limit", "32", "--tracking-uri", uri]) == 0
    assert "iw_nll" in capsys.readouterr().out


def test_a_model_registered_from_package_folders_apart_carries_each_package(shakespeare, tmp_path):
    """A Ray job's `py_modules` unpack each package into a folder of its own (`_ray_pkg_<hash>/seqlvm`,
    `_ray_pkg_<hash>/pipelines`): registering from there must find each package where it was imported from."""
    import shutil

    from conftest import REPO, run_without_checkout
    folders = {package: tmp_path / f"_ray_pkg_{package}" for package in ("seqlvm", "pipelines")}
    for package, folder in folders.items():
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    checkpoint = make_checkpoint(tmp_path / "ckpt", shakespeare, seed=0)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registered = run_without_checkout(f"""
        from pathlib import Path
        sys.path[:0] = [{str(folders["seqlvm"])!r}, {str(folders["pipelines"])!r}]
        from seqlvm import tracking
        from seqlvm.tracking import registry
        experiment = tracking.ensure_experiment({uri!r}, "apart", Path({str(tmp_path)!r}))
        run_id = tracking.client({uri!r}).create_run(experiment).info.run_id
        print(registry.register_checkpoint({uri!r}, run_id, Path({str(checkpoint)!r}), "apart", {{}}, {{}}))
        print([str(path) for path in registry.check_model_code()])
    """, cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr[-3000:]
    version, checked = registered.stdout.strip().splitlines()[-2:]
    assert checked == str([str(folders["seqlvm"] / "seqlvm"), str(folders["pipelines"] / "pipelines")])
    stored = tracking.client(uri).get_model_version_download_uri("apart", version)
    code = Path(mlflow.artifacts.download_artifacts(stored, tracking_uri=uri)) / "code"
    assert (code / "seqlvm" / "tracking" / "pyfunc_model.py").is_file() and (code / "pipelines" / "frames.py").is_file()
