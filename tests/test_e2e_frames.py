"""End to end for speech, handwriting and music, through the CLI on real Ray and a real SQLite MLflow store:
prepare a real corpus, train with 2 Ray Train workers, evaluate, sample (rendered files logged to MLflow), and
serve the model through `mlflow.pyfunc`. One model family per modality, so all three are covered."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seqlvm import cli, tracking

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# Batches of 4: each worker gets its 4 steps from one epoch of these small corpora (an epoch is a new Ray Data
# execution, seconds each on 2 cores).
TINY = ["model.hidden_dim=16", "model.latent_dim=4", "model.feature_dim=16", "model.components=3",
        "train.batch_size=4", "train.log_every=2", "train.eval_every=2", "train.eval_batches=2",
        "train.final_iw_samples=3"]

SPLITS = ["--valid-fraction", "0.2", "--test-fraction", "0.2"]  # small corpora: keep valid and test non-empty
# modality: (source, prepare flags, model, files each rendered sample gives)
CASES = {
    "audio": ("builtin:flite", ["--synth-sentences", "12", *SPLITS], "vrnn", {".wav", ".png"}),
    "strokes": ("builtin:lasa", ["--max-items", "35", *SPLITS], "srnn", {".png"}),  # 28 training sequences: 4 steps read them all
    "midi": ("builtin:bach", ["--max-pieces", "20", *SPLITS], "rnn", {".mid", ".png"}),
}


# One corpus gets a training sequence of NaNs (a corrupt recording, a broken sensor): its batch must be skipped.
POISONED = "strokes"


def poison_training_sequences(data: Path, first_only: bool = True) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for shard in sorted((data / "train").glob("*.parquet"))[:1 if first_only else None]:
        table = pq.read_table(shard)
        frames = table.column("frames").to_pylist()
        for row in range(1 if first_only else len(frames)):
            frames[row] = [float("nan")] * len(frames[row])
        column = table.schema.get_field_index("frames")
        pq.write_table(table.set_column(column, table.schema.field(column),
                                        pa.array(frames, pa.list_(pa.float32()))), shard)


def needs_flite(modality: str) -> None:
    if modality == "audio" and shutil.which("flite") is None:
        pytest.skip("builtin:flite needs Debian's flite (apt-get install flite)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch_module.setenv("SEQLVM_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, ray_session, cache, tmp_path_factory):
    """(modality, manifest, tracking URI, MLflow run, CLI output of train) of a 4-step run on 2 workers."""
    modality = request.param
    needs_flite(modality)
    folder = tmp_path_factory.mktemp(modality)
    source, flags, model, _ = CASES[modality]
    assert cli.main(["prepare", modality, "--source", source, "--out", str(folder / "data"), *flags]) == 0
    manifest = json.loads((folder / "data" / "manifest.json").read_text())
    if modality == POISONED:
        poison_training_sequences(folder / "data")
    overrides = [o for o in TINY if model != "rnn" or "latent" not in o]
    assert cli.main(["train", "--data", str(folder / "data"), "--model", model, "--workers", "2",
                     "--max-steps", "4", "--workdir", str(folder / "runs"), "--name", modality, *overrides]) == 0
    uri = tracking.resolve_tracking_uri(None, folder / "runs")
    client = tracking.client(uri)
    run = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id])[0]
    return modality, manifest, uri, run


def test_training_logs_per_step_metrics_and_rendered_samples(trained):
    modality, manifest, uri, run = trained
    assert manifest["modality"] == modality and manifest["splits"]["train"]["sequences"] > 0
    assert run.info.status == "FINISHED" and run.data.params["data.modality"] == modality
    assert run.data.params["workers"] == "2" and run.data.params["model.output"] == manifest["output"]
    for key in ("train/elbo", "valid/elbo_per_step", "test/elbo_per_step", "test/iw_ll_per_step"):
        assert key in run.data.metrics, key
    # A log-likelihood estimate is a bound only in expectation; with 3 samples allow a little noise.
    assert run.data.metrics["test/iw_ll_per_step"] >= run.data.metrics["test/elbo_per_step"] - 0.05
    client = tracking.client(uri)
    logged = {Path(a.path).suffix for a in client.list_artifacts(run.info.run_id, "samples")}
    assert CASES[modality][3] <= logged, "training logs rendered prior samples"


def test_a_nan_batch_is_skipped_counted_and_never_checkpointed(trained):
    import torch

    from seqlvm.checkpoint import read_checkpoint, resolve_checkpoint

    modality, _, uri, run = trained
    skipped = max(m.value for m in tracking.client(uri).get_metric_history(run.info.run_id, "train/skipped_steps"))
    # 4 steps of batches of 4 on 2 workers read every training sequence of the small corpus once
    assert skipped == (1 if modality == POISONED else 0)
    weights = read_checkpoint(resolve_checkpoint(f"runs:/{run.info.run_id}/checkpoint", uri))["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_only_nan_batches_stop_the_run_with_its_reason(ray_session, cache, tmp_path, capsys):
    import torch

    from seqlvm.checkpoint import read_checkpoint, resolve_checkpoint

    data = tmp_path / "data"
    assert cli.main(["prepare", "strokes", "--source", "builtin:lasa", "--max-items", "20", *SPLITS,
                     "--out", str(data)]) == 0
    poison_training_sequences(data, first_only=False)
    capsys.readouterr()
    code = cli.main(["train", "--data", str(data), "--model", "rnn", "--workers", "1", "--max-steps", "60",
                     "--workdir", str(tmp_path / "runs"), "--name", "nan", "train.batch_size=4",
                     "train.log_every=5", "train.eval_every=100", "model.hidden_dim=16", "model.components=3"])
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress Ray and MLflow printed
    assert code == 2 and error.startswith("seqlvm: error: training run nan stopped: loss or gradient was NaN/inf "
                                          "for 20 consecutive steps")
    client = tracking.client(tracking.resolve_tracking_uri(None, tmp_path / "runs"))
    run = client.search_runs([client.get_experiment_by_name("seqlvm").experiment_id])[0]
    assert run.info.status == "FAILED" and "20 consecutive steps" in run.data.tags["seqlvm.failure"]
    assert run.data.metrics["train/skipped_steps"] == 20
    # The state at the stop is checkpointed (it carries the reason): weights no skipped step has touched.
    weights = read_checkpoint(resolve_checkpoint(str(tmp_path / "runs" / "ray" / "nan")))["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_cli_evaluates_and_renders_samples_logged_to_mlflow(trained, tmp_path, capsys):
    modality, _, uri, run = trained
    checkpoint = f"runs:/{run.info.run_id}/checkpoint"
    assert cli.main(["evaluate", checkpoint, "--tracking-uri", uri, "--samples", "3", "--limit", "8"]) == 0
    table = capsys.readouterr().out
    assert "elbo_per_step" in table and "iw_ll_per_step" in table
    assert cli.main(["sample", checkpoint, "--tracking-uri", uri, "--n", "2", "--length", "12",
                     "--out", str(tmp_path)]) == 0
    suffixes = CASES[modality][3]
    written = sorted(tmp_path.iterdir())
    assert {p.suffix for p in written} == suffixes and len(written) == 2 * len(suffixes)
    assert all(p.stat().st_size > 0 for p in written)
    assert "logged to MLflow run" in capsys.readouterr().out
    names = {a.path for a in tracking.client(uri).list_artifacts(run.info.run_id, "samples")}
    assert {f"samples/{p.name}" for p in written} <= names


def test_registered_frame_model_serves_samples_through_pyfunc(trained):
    import mlflow
    import numpy as np
    import pandas as pd

    from seqlvm.checkpoint import load_model, resolve_checkpoint
    from seqlvm.operations import ModelOperations
    from seqlvm.tracking import registry

    modality, manifest, uri, run = trained
    checkpoint = resolve_checkpoint(f"runs:/{run.info.run_id}/checkpoint", uri)
    version = registry.register_checkpoint(uri, run.info.run_id, checkpoint, modality, {}, manifest)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"models:/{modality}/{version}")
    result = served.predict(pd.DataFrame({"steps": [5, 9]}), params={"seed": 3})
    samples = [np.asarray(json.loads(f)) for f in result["frames"]]
    assert [s.shape for s in samples] == [(5, manifest["frame_dim"]), (9, manifest["frame_dim"])]
    if modality == "midi":
        assert set(np.unique(np.concatenate(samples))) <= {0.0, 1.0}
    else:  # in the data's units again: pen bits stay bits, offsets and samples are real numbers
        assert np.isfinite(np.concatenate(samples)).all()
    # frames in the data's units score as `seqlvm.operations` scores them (standardised as at preparation)
    scored = served.predict(pd.DataFrame({"frames": [json.dumps(s.tolist()) for s in samples]}),
                            params={"mode": "score", "samples": 3, "seed": 1})
    expected = ModelOperations(load_model(f"models:/{modality}/{version}", uri)).score(
        [s.tolist() for s in samples], samples=3, seed=1)
    assert list(scored["steps"]) == [5, 9] and list(scored["iw_ll"]) == pytest.approx(expected["iw_ll"], rel=1e-5)
    assert np.isfinite(scored["iw_ll"]).all() and (scored["iw_ll"] >= scored["elbo"] - 1e-3).all()


def test_a_text_model_refuses_frame_data_in_one_line(trained, capsys):
    modality, manifest, _, run = trained
    data = run.data.tags["seqlvm.data_dir"]
    code = cli.main(["train", "--data", data, "--model", "sentence-vae", "--workdir", str(Path(data).parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"does not read {modality!r} data" in err and "vrnn" in err
