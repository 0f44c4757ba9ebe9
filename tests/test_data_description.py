"""A model's inputs are encoded exactly as its corpus was prepared: the `DataDescription` a checkpoint carries
(vocabulary and tokenisation options) is what `seqlvm sample --sentence`, the registered MLflow model and the
service (real Ray Serve on 127.0.0.1, a real HTTP client) read sentences with. A corpus prepared with
non-default tokenisation (case kept, whitespace tokens) round-trips a sentence identically; read with the
default options, every one of its tokens would be unknown."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.text import TextOptions, tokenize
from seqlvm import cli, tracking
from seqlvm.checkpoint import save_checkpoint
from seqlvm.models import build_model
from seqlvm.tracking import registry

SENTENCE = "Hello, World! The Cat sat."
WORDS = ["Hello,", "World!", "The", "Cat", "sat.", "Dog", "ran!", "A", "Bird", "sang,", "Fish", "swam."]
NAME = "case-kept"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A corpus prepared with --no-lowercase --tokenizer whitespace, and an (untrained) model's checkpoint."""
    root = tmp_path_factory.mktemp("case-kept")
    rng = np.random.default_rng(0)
    lines = [SENTENCE] * 20 + [" ".join(rng.choice(WORDS, size=6)) for _ in range(80)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    data_dir = root / "data"
    assert cli.main(["prepare", "text", "--source", str(root / "corpus.txt"), "--out", str(data_dir),
                     "--layout", "lines", "--no-lowercase", "--tokenizer", "whitespace"]) == 0
    dataset = PreparedDataset.open(data_dir)
    torch.manual_seed(0)
    model = build_model("sentence-vae", {"embedding_dim": 8, "hidden_dim": 8, "latent_dim": 3}, dataset.input_size)
    (root / "ckpt").mkdir()
    save_checkpoint(root / "ckpt", model, step=1, config={}, data=DataDescription.of_dataset(dataset).to_dict())
    return root, dataset, model


def prepared_ids(dataset: PreparedDataset) -> np.ndarray:
    """The token ids preparation wrote for SENTENCE."""
    for sequence in dataset.read("train"):
        if dataset.vocab.text(sequence) == SENTENCE:
            return sequence
    raise AssertionError("the sentence is not in the training split")


def test_the_description_holds_the_preparation_options_and_survives_plain_data(prepared):
    _, dataset, _ = prepared
    data = DataDescription.of_dataset(dataset)
    assert data.tokenisation == {"lowercase": False, "tokenizer": "whitespace", "unit": "word"}
    assert DataDescription.from_dict(json.loads(json.dumps(data.to_dict()))) == data
    assert list(data.encode_sentences([SENTENCE])[0]) == list(prepared_ids(dataset))
    # what the default options would have read: none of its tokens
    default = set(tokenize(SENTENCE, TextOptions())) & set(dataset.vocab.words)
    assert not default and data.unknown_words(SENTENCE) == []


def test_sample_reads_the_sentence_as_it_was_prepared(prepared, capsys):
    root, _, _ = prepared
    assert cli.main(["sample", str(root / "ckpt"), "--n", "1", "--sentence", SENTENCE, "--max-len", "2"]) == 0
    assert SENTENCE in capsys.readouterr().out  # the input column: the sentence as the model reads it


def test_the_registered_model_encodes_as_preparation_did(prepared):
    root, dataset, model = prepared
    uri = tracking.resolve_tracking_uri(f"sqlite:///{root / 'mlflow.db'}", root)
    client = tracking.client(uri)
    run_id = client.create_run(tracking.ensure_experiment(uri, "description", root)).info.run_id
    version = registry.register_checkpoint(uri, run_id, root / "ckpt" / "model.pt", NAME, {}, dataset.manifest)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    encoded = served.predict(pd.DataFrame({"sentence": [SENTENCE]}), params={"mode": "encode"})
    expected, _ = model.eval().encode(collate([prepared_ids(dataset)]))
    assert json.loads(encoded["mean"][0]) == pytest.approx(expected[0].tolist(), abs=1e-6)
    with pytest.raises(Exception, match="outside the model's vocabulary.*hello"):
        served.predict(pd.DataFrame({"sentence": ["hello there"]}), params={"mode": "encode"})


@pytest.mark.ray
def test_the_service_encodes_as_preparation_did(prepared, ray_session):
    import requests

    from seqlvm.cluster.local_cluster import free_port
    from seqlvm.serving import launch
    from seqlvm.serving.settings import ServeSettings

    root, dataset, model = prepared
    url, = launch.deploy(ServeSettings(str(root / "ckpt"), name="case-kept", route_prefix="/case-kept",
                                       port=free_port(), replica_cpus=0.25))
    try:
        answer = requests.post(f"{url}/encode", json={"sentences": [SENTENCE]}, timeout=120)
        refused = requests.post(f"{url}/encode", json={"sentences": ["hello there"]}, timeout=120)
    finally:
        launch.shutdown()
    expected, _ = model.eval().encode(collate([prepared_ids(dataset)]))
    assert answer.status_code == 200 and answer.json()["mean"][0] == pytest.approx(expected[0].tolist(), abs=1e-6)
    assert refused.status_code == 400 and "hello" in refused.json()["detail"]


def test_frames_in_the_datas_units_are_standardised_and_back():
    """Pen offsets standardised as preparation stored them (dims 0-1; the pen bit left alone), and back."""
    data = DataDescription("strokes", frame_dim=3, normalisation={"dims": [0, 1], "mean": [2.0, -1.0],
                                                                  "std": [4.0, 0.5]})
    frames = np.array([[6.0, -1.5, 1.0], [2.0, 0.0, 0.0]], dtype=np.float32)
    standardised = data.standardised(frames)
    assert standardised.tolist() == [[1.0, -1.0, 1.0], [0.0, 2.0, 0.0]]
    assert data.in_data_units(standardised).tolist() == frames.tolist()
    with pytest.raises(SeqlvmError, match=r"frames of shape \(2, 2\): this model reads \(steps, 3\)"):
        data.standardised(frames[:, :2])
