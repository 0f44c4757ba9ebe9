"""`seqlvm serve`: real Ray Serve on 127.0.0.1 (the session's Ray), talked to with a real HTTP client (requests).

One Serve instance for the module, with one application per model, all deployed at once by the service's own
`launch.deploy`: the text fixture checkpoint, a frame model of each modality (speech and handwriting built here
from tiny prepared corpora, piano rolls from the fixture checkpoint), and `models:/NAME@champion` of a real SQLite
MLflow registry, whose alias a test moves under load. The command line runs in subprocesses: once with a Ray of
its own, stopped with SIGINT, and once joining the session's Ray (`--address`), then stopped with `--stop`."""
from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import REPO, wait_for

from seqlvm.operations import RequestError
from seqlvm.serving.batching import Job, answer_jobs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
TEXT_DATA = REPO / "tests" / "fixtures" / "datasets" / "tiny-text"
SENTENCES = ["the cat sat on the dog .", "a king ran in the park ."]  # words of both text models' vocabularies
REGISTERED = "tiny-vae"
FRAME_DIM = {"audio": 40, "strokes": 3, "midi": 88}
MEDIA = {"audio": {".wav": "audio/wav", ".png": "image/png"}, "strokes": {".png": "image/png"},
         "midi": {".png": "image/png", ".mid": "audio/midi"}}
MAGIC = {".wav": b"RIFF", ".png": b"\x89PNG", ".mid": b"MThd"}
TIMEOUT = 60  # seconds for one HTTP request


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port`, as Linux's /proc/net/tcp* writes them (127.0.0.1:
    0100007F; every interface: 00000000)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def post(url: str, path: str, body=None, **kwargs) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=TIMEOUT, **kwargs)


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# Models
def frame_checkpoint(root: Path, modality: str) -> Path:
    """An untrained small model on a tiny corpus of `modality` prepared here."""
    from pipelines.dataset import PreparedDataset
    from pipelines.description import DataDescription
    from seqlvm.checkpoint import save_checkpoint
    from seqlvm.models import build_model

    data_dir = root / modality
    if modality == "audio":
        import soundfile

        from pipelines.audio import AudioOptions, prepare_audio
        rate = 8000
        (root / "wav").mkdir()
        for i, pitch in enumerate((220, 330, 440)):  # a second of a tone each
            tone = 0.3 * np.sin(2 * np.pi * pitch * np.arange(rate) / rate)
            soundfile.write(str(root / "wav" / f"{i}.wav"), tone.astype(np.float32), rate)
        prepare_audio(str(root / "wav"), data_dir, AudioOptions(sample_rate=rate, frame_size=40, segment_seconds=0.1,
                                                                valid_fraction=0, test_fraction=0))
        family = "vrnn"
    else:
        from pipelines.strokes import StrokeOptions, prepare_strokes, write_iam_xml
        rng = np.random.default_rng(0)
        for line in range(6):
            start = rng.integers(0, 500, 2)
            write_iam_xml(root / "ink" / f"a{line:02d}" / f"a{line:02d}-000" / f"a{line:02d}-000u-01.xml",
                          [[tuple(start + rng.integers(-50, 50, 2)) for _ in range(5)] for _ in range(2)])
        prepare_strokes(str(root / "ink"), data_dir, StrokeOptions(valid_fraction=0, test_fraction=0))
        family = "srnn"
    data = DataDescription.of_dataset(PreparedDataset.open(data_dir))
    model = build_model(family, {"hidden_dim": 8, "latent_dim": 2, "feature_dim": 8, "components": 2,
                                 "output": data.output}, data.frame_dim)
    folder = root / f"{modality}-checkpoint"
    folder.mkdir()
    return save_checkpoint(folder, model, data=data.to_dict(), config={})


def text_checkpoint(folder: Path, seed: int) -> Path:
    import torch

    from pipelines.dataset import PreparedDataset
    from pipelines.description import DataDescription
    from seqlvm.checkpoint import save_checkpoint
    from seqlvm.models import build_model

    torch.manual_seed(seed)
    data = DataDescription.of_dataset(PreparedDataset.open(TEXT_DATA))
    model = build_model("sentence-vae", {"embedding_dim": 8, "hidden_dim": 8, "latent_dim": 2}, data.input_size)
    folder.mkdir(parents=True)
    return save_checkpoint(folder, model, data=data.to_dict(), config={})


def two_versions(root: Path) -> tuple[str, object]:
    """Two versions of a tiny sentence VAE in a SQLite MLflow registry; version 1 holds @champion."""
    from seqlvm import tracking
    from seqlvm.tracking import registry as versions

    uri = tracking.resolve_tracking_uri(f"sqlite:///{root / 'mlflow.db'}", root)
    experiment = tracking.ensure_experiment(uri, "serve-test", root)
    client = tracking.client(uri)
    for seed in (1, 2):
        run_id = client.create_run(experiment).info.run_id
        versions.register_checkpoint(uri, run_id, text_checkpoint(root / f"v{seed}", seed), REGISTERED, {}, {})
    versions.set_alias(client, REGISTERED, "1")
    return uri, client


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    """The URL of each application, by model: text, audio, strokes, midi, champion. The registry is built
    beside the first deployments: a new SQLite MLflow store takes seconds of schema migrations."""
    from concurrent.futures import ThreadPoolExecutor

    from seqlvm.serving import launch
    from seqlvm.serving.settings import ServeSettings

    root = tmp_path_factory.mktemp("serve")
    with ThreadPoolExecutor(1) as pool:
        registry = pool.submit(two_versions, root)
        models = {"text": CHECKPOINTS / "sentence-vae.pt", "midi": CHECKPOINTS / "vrnn.pt",
                  **{modality: frame_checkpoint(root, modality) for modality in ("audio", "strokes")}}
        port = free_port()
        settings = [ServeSettings(str(path), name=name, route_prefix=f"/{name}", port=port, replica_cpus=0.25)
                    for name, path in models.items()]
        try:
            urls = dict(zip(models, launch.deploy(*settings)))
            uri, client = registry.result(timeout=120)
            champion = ServeSettings(f"models:/{REGISTERED}@champion", uri, name="champion", route_prefix="/champion",
                                     port=port, replica_cpus=0.25, poll_s=0.2)
            urls["champion"], = launch.deploy(champion)
            yield {**urls, "registry": client}
        finally:
            launch.shutdown()


# Text
def test_info_says_what_the_model_is_and_can_do(service):
    for path in ("/", "/info"):
        info = ok(requests.get(f"{service['text']}{path}", timeout=TIMEOUT))
        assert info["family"] == "sentence-vae" and info["modality"] == "text" and info["inputs"] == "sentences"
        assert info["operations"] == ["sample", "reconstruct", "encode", "interpolate", "score"]
        assert info["model_version"] is None and info["follows"] is None and info["vocabulary_size"] == 25
        assert info["model"].endswith("sentence-vae.pt") and info["limits"]["max_inputs"] == 256


def test_text_operations_answer_as_the_model_operations_do(service):
    from seqlvm.checkpoint import load_model
    from seqlvm.operations import ModelOperations

    local = ModelOperations(load_model(str(CHECKPOINTS / "sentence-vae.pt")))
    url = service["text"]
    words = set(local.data.words)

    sampled = ok(post(url, "/sample", {"n": 3, "seed": 4, "temperature": 0.8, "max_len": 12}))
    assert sampled["sentences"] == local.sample(n=3, seed=4, temperature=0.8, max_len=12)
    assert sampled["model_version"] is None and len(sampled["sentences"]) == 3

    decoded = ok(post(url, "/reconstruct", {"sentences": SENTENCES, "max_len": 9}))["sentences"]
    assert decoded == local.reconstruct(SENTENCES, max_len=9)
    assert len(decoded) == 2 and all(set(s.split()) <= words for s in decoded)

    encoded = ok(post(url, "/encode", {"sentences": SENTENCES}))
    mean, variance = local.encode(SENTENCES)
    assert np.allclose(encoded["mean"], mean, atol=1e-6) and np.allclose(encoded["variance"], variance, atol=1e-6)
    assert np.shape(encoded["mean"]) == (2, 2) and np.min(encoded["variance"]) > 0

    path = ok(post(url, "/interpolate", {"first": SENTENCES[0], "second": SENTENCES[1], "steps": 4, "max_len": 6}))
    assert path["t"] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and len(path["sentences"]) == 4
    assert path["sentences"] == local.interpolate(SENTENCES[0], SENTENCES[1], steps=4, max_len=6)

    scores = ok(post(url, "/score", {"sentences": SENTENCES, "samples": 7, "seed": 3}))["scores"]
    expected = local.score(SENTENCES, samples=7, seed=3)
    assert [s["steps"] for s in scores] == expected["steps"] == [8, 8]  # tokens and </s>
    assert [s["elbo"] for s in scores] == pytest.approx(expected["elbo"], abs=1e-4)
    assert [s["iw_ll"] for s in scores] == pytest.approx(expected["iw_ll"], abs=1e-4)
    for score in scores:
        assert score["samples"] == 7 and len(score["posterior_mean"]) == 2 and score["kl"] >= 0
        assert score["elbo_per_step"] * score["steps"] == pytest.approx(score["elbo"], rel=1e-5)
        assert score["iw_ll_per_step"] * score["steps"] == pytest.approx(score["iw_ll"], rel=1e-5)


def test_unknown_words_are_refused_unless_mapped(service):
    refused = post(service["text"], "/reconstruct", {"sentences": ["the zebra sat ."]})
    assert refused.status_code == 400 and "zebra" in refused.json()["detail"]
    mapped = ok(post(service["text"], "/reconstruct", {"sentences": ["the zebra sat ."], "unknown": "map"}))
    assert len(mapped["sentences"]) == 1


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(service):
    """Requests arriving together share model calls (@serve.batch); each gets the rows of its own inputs, as it
    would alone (the posterior means of score, deterministic, tell the sentences apart where this untrained
    model's decodes do not), and a bad request in the crowd fails alone."""
    url = service["text"]
    sentences = [*SENTENCES, "the dog ran .", "my lord , the king is here .", "to be or not to be .",
                 "is the dog here ?"]
    crowd = [("/score", {"sentences": sentences[i % 6:i % 6 + 1 + i % 3], "samples": 2}) for i in range(12)]
    crowd += [("/reconstruct", {"sentences": sentences[i:i + 2], "max_len": 5}) for i in range(5)]
    crowd.append(("/score", {"sentences": ["the zebra sat ."], "samples": 2}))
    alone = [ok(post(url, path, body)) for path, body in crowd[:-1]]
    answers: list = [None] * len(crowd)
    start = threading.Barrier(len(crowd))

    def ask(index: int) -> None:
        start.wait(timeout=TIMEOUT)
        answers[index] = post(url, *crowd[index])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(crowd))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * TIMEOUT)
    assert [a.status_code for a in answers] == [200] * (len(crowd) - 1) + [400]
    assert "zebra" in answers[-1].json()["detail"]
    for (path, body), answer, expected in zip(crowd, answers, alone):
        if path == "/reconstruct":
            assert answer.json()["sentences"] == expected["sentences"]
            continue
        rows, expected_rows = answer.json()["scores"], expected["scores"]
        assert [r["steps"] for r in rows] == [r["steps"] for r in expected_rows]
        assert np.allclose([r["posterior_mean"] for r in rows], [r["posterior_mean"] for r in expected_rows],
                           atol=1e-5), (body, rows, expected_rows)


def test_replicas_ask_for_a_share_of_the_gpus_when_the_cluster_has_them():
    from seqlvm.serving.launch import replica_resources
    from seqlvm.serving.settings import ServeSettings

    one, three, scaled = (ServeSettings("m", replicas=1), ServeSettings("m", replicas=3),
                          ServeSettings("m", autoscale=(1, 4), replica_cpus=2))
    assert replica_resources(one, {"CPU": 8}) == {"num_cpus": 1}
    assert replica_resources(one, {"CPU": 8, "GPU": 2}) == {"num_cpus": 1, "num_gpus": 1}
    assert replica_resources(three, {"CPU": 8, "GPU": 1}) == {"num_cpus": 1, "num_gpus": 0.33}
    assert replica_resources(scaled, {"CPU": 8, "GPU": 2}) == {"num_cpus": 2, "num_gpus": 0.5}


def test_jobs_with_equal_options_share_a_call_within_the_input_limit():
    """The grouping behind the batched paths, with an operation that records its calls and refuses as
    ModelOperations does."""
    calls = []

    def operation(inputs, scale):
        calls.append((list(inputs), scale))
        if not inputs or "bad" in inputs:
            raise RequestError("refused")
        return {"value": [x * scale for x in inputs]} if scale else [x.upper() for x in inputs]

    joined = answer_jobs([Job.of(["a"], scale=0), Job.of([1], scale=2), Job.of(["b", "c"], scale=0),
                          Job.of([2, 3], scale=2)], operation, max_inputs=4)
    assert joined == [["A"], {"value": [2]}, ["B", "C"], {"value": [4, 6]}]
    assert calls == [(["a", "b", "c"], 0), ([1, 2, 3], 2)]

    calls.clear()
    answers = answer_jobs([Job.of(["a", "b"], scale=0), Job.of([1, 2], scale=3), Job.of(["bad"], scale=0),
                           Job.of(["c"], scale=0), Job.of(["d", "e"], scale=0), Job.of([], scale=0)],
                          operation, max_inputs=4)
    assert answers[:2] == [["A", "B"], {"value": [3, 6]}] and answers[3:5] == [["C"], ["D", "E"]]
    assert isinstance(answers[2], RequestError) and isinstance(answers[5], RequestError)
    # 4 inputs a call: a, b, bad, c are refused together, then answered one by one; d, e go with the empty job,
    # which is never joined (it would vanish from a joined call instead of being refused)
    assert calls == [(["a", "b", "bad", "c"], 0), (["a", "b"], 0), (["bad"], 0), (["c"], 0), (["d", "e"], 0),
                     ([], 0), ([1, 2], 3)]


# Frames
@pytest.mark.parametrize("modality", ["audio", "strokes", "midi"])
def test_frame_models_sample_render_and_score_in_the_datas_units(service, modality):
    url = service[modality]
    info = ok(requests.get(f"{url}/info", timeout=TIMEOUT))
    assert info["modality"] == modality and info["inputs"] == "frames" and info["frame_dim"] == FRAME_DIM[modality]
    assert info["operations"] == ["sample", "score"]

    sampled = ok(post(url, "/sample", {"n": 2, "steps": 5, "seed": 1, "render": True}))
    assert np.shape(sampled["frames"]) == (2, 5, FRAME_DIM[modality])
    names = [f["name"] for f in sampled["files"]]
    assert sorted(names) == sorted(f"sample-{i:02d}{suffix}" for i in range(2) for suffix in MEDIA[modality])
    for file in sampled["files"]:
        suffix = Path(file["name"]).suffix
        assert file["media_type"] == MEDIA[modality][suffix]
        assert base64.b64decode(file["base64"]).startswith(MAGIC[suffix])

    scores = ok(post(url, "/score", {"frames": sampled["frames"], "samples": 4, "seed": 2}))["scores"]
    assert [s["steps"] for s in scores] == [5, 5] and all(s["samples"] == 4 for s in scores)
    assert all(np.isfinite([s["elbo"], s["iw_ll"]]).all() for s in scores)

    lacking = post(url, "/reconstruct", {"frames": sampled["frames"]})
    assert lacking.status_code == 400 and "cannot reconstruct" in lacking.json()["detail"]


def test_frames_go_in_and_out_in_the_datas_units(service):
    """Handwriting is standardised for the model: the service's frames, sampled and scored, are the ones
    ModelOperations gives in the data's units (pen offsets in tablet units, pen lifts 0 or 1)."""
    from seqlvm.checkpoint import load_model
    from seqlvm.operations import ModelOperations

    url = service["strokes"]
    local = ModelOperations(load_model(ok(requests.get(f"{url}/info", timeout=TIMEOUT))["uri"]))
    assert local.data.normalisation
    frames = ok(post(url, "/sample", {"n": 1, "steps": 6, "seed": 5}))["frames"]
    assert np.allclose(frames, np.asarray(local.sample(n=1, steps=6, seed=5)), atol=1e-4)
    assert set(np.asarray(frames)[0, :, 2]) <= {0.0, 1.0}
    score = ok(post(url, "/score", {"frames": frames, "samples": 3, "seed": 0}))["scores"][0]
    assert score["elbo"] == pytest.approx(local.score(frames, samples=3, seed=0)["elbo"][0], abs=1e-3)


# Bad requests
LONG = " ".join(["the"] * 201)
BAD = [  # (model, path, body or raw text, status, in the detail)
    ("text", "/reconstruct", {"sentence": SENTENCES}, 422, "sentence: Extra inputs are not permitted"),
    ("text", "/reconstruct", {}, 400, "sentences: required"),
    ("text", "/reconstruct", {"sentences": "the cat"}, 422, "sentences: Input should be a valid list"),
    ("text", "/sample", {"n": "3"}, 422, "n: Input should be a valid integer"),
    ("text", "/sample", {"greedy": "yes"}, 422, "greedy: Input should be a valid boolean"),
    ("text", "/reconstruct", {"sentences": [7]}, 422, "sentences.0: Input should be a valid string"),
    ("text", "/reconstruct", {"sentences": []}, 400, "no sentences given"),
    ("text", "/reconstruct", {"sentences": ["  "]}, 400, "empty sentence"),
    ("text", "/encode", {"sentences": [LONG]}, 400, "a sentence of 201 tokens: at most 200"),
    ("text", "/score", {"sentences": ["the cat ."] * 257}, 400, "257 inputs: at most 256"),
    ("text", "/encode", {"sentences": ["the zebra ."]}, 400, "outside the model's vocabulary"),
    ("text", "/score", {"sentences": SENTENCES, "samples": 5000}, 400, "samples=5000: an integer from 1 to 1000"),
    ("text", "/sample", {"n": 100000}, 400, "n=100000: an integer from 1 to 256"),
    ("text", "/sample", {"temperature": 0}, 400, "temperature=0.0: a number above 0"),
    ("text", "/sample", {"steps": 5}, 400, "steps: only frame models"),
    ("text", "/interpolate", {"first": "the cat ."}, 422, "second: Field required"),
    ("text", "/interpolate", {"first": "the cat .", "second": "a dog .", "steps": 51}, 400, "steps=51"),
    ("text", "/reconstruct", {"sentences": SENTENCES, "unknown": "drop"}, 422, "unknown: Input should be"),
    ("text", "/reconstruct", {"frames": [[[0.0]]]}, 400, "frames: this model reads text; send sentences"),
    ("text", "/reconstruct", "{not json", 422, "the body is not JSON"),
    ("text", "/reconstruct", "[1, 2]", 422, "Input should be a valid dictionary"),
    ("midi", "/score", {"sentences": SENTENCES}, 400, "sentences: this model reads frames; send frames"),
    ("midi", "/score", {"frames": [[[0.0] * 87]]}, 400, "frames[0]: frames of shape (1, 87): this model reads"),
    ("midi", "/score", {"frames": [[]]}, 400, "frames[0]"),
    ("midi", "/score", {"frames": [[[0.0] * 88] * 5001]}, 400, "5001 steps: between 1 and 5000"),
    ("midi", "/score", {"frames": [[["x"] * 88]]}, 422, "frames.0.0.0: Input should be a valid number"),
    ("strokes", "/score", '{"frames": [[[NaN, 0, 1]]]}', 400, "NaN or infinite"),
    ("midi", "/sample", {"steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
    ("midi", "/sample", {"steps": 5001}, 400, "steps=5001: an integer from 1 to 5000"),
    ("midi", "/sample", {"temperature": 0.5}, 400, "temperature: only text models"),
    ("midi", "/encode", {"frames": [[[0.0] * 88]]}, 400, "has no global latent: it cannot encode"),
    ("midi", "/interpolate", {"first": [[0.0] * 88], "second": [[1.0] * 88]}, 400, "cannot interpolate"),
    ("midi", "/score", {"frames": [[[0.0] * 88]], "unknown": "map"}, 400, "unknown: only text models"),
]


@pytest.mark.parametrize("model, path, body, status, detail", BAD, ids=[f"{m}{p}-{d[:30]}" for m, p, _, _, d in BAD])
def test_a_bad_request_gets_a_4xx_with_a_one_line_reason(service, model, path, body, status, detail):
    if isinstance(body, str):
        answer = requests.post(f"{service[model]}{path}", data=body, timeout=TIMEOUT,
                               headers={"content-type": "application/json"})
    else:
        answer = post(service[model], path, body)
    assert answer.status_code == status, answer.text[:300]
    reason = answer.json()["detail"]
    assert isinstance(reason, str) and "\n" not in reason and detail in reason


def test_unknown_paths_and_methods_are_4xx(service):
    assert requests.post(f"{service['text']}/translate", json={}, timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{service['text']}/score", timeout=TIMEOUT).status_code == 405


def test_the_openapi_schema_lists_every_operation(service):
    schema = ok(requests.get(f"{service['text']}/openapi.json", timeout=TIMEOUT))
    paths = schema["paths"]
    for operation in ("sample", "reconstruct", "encode", "interpolate", "score"):
        assert "post" in paths[f"/{operation}"], operation
        assert paths[f"/{operation}"]["post"]["summary"]
    assert "get" in paths["/"] and "get" in paths["/info"]
    components = schema["components"]["schemas"]
    assert {"sentences", "frames", "max_len", "unknown"} <= set(components["ReconstructRequest"]["properties"])
    assert {"scores", "model_version"} <= set(components["ScoreAnswer"]["properties"])


# The alias
def test_the_service_follows_the_alias_under_load_without_failing_a_request(service):
    from seqlvm.tracking import registry as versions

    client = service["registry"]
    url = service["champion"]
    info = ok(requests.get(f"{url}/info", timeout=TIMEOUT))
    assert info["model_version"] == "1" and info["follows"] == "champion" and info["model"] == REGISTERED
    answers: list[tuple] = []
    stop = threading.Event()

    def hammer(path: str, body: dict) -> None:
        while not stop.is_set():
            try:
                answer = post(url, path, body)
                answers.append((answer.status_code, answer.json().get("model_version"), answer.text[:200]))
            except Exception as exc:  # a dropped connection is a failed request too
                answers.append((None, None, repr(exc)))

    clients = [threading.Thread(target=hammer, args=("/reconstruct", {"sentences": SENTENCES})) for _ in range(3)]
    clients.append(threading.Thread(target=hammer, args=("/sample", {"n": 2})))
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 10, TIMEOUT, "answers from version 1")
        versions.set_alias(client, REGISTERED, "2")
        wait_for(lambda: [v for _, v, _ in answers[-10:]] == ["2"] * 10, TIMEOUT, "10 answers in a row from version 2")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=TIMEOUT)
    failed = [a for a in answers if a[0] != 200]
    assert not failed, failed[:3]
    seen = [v for _, v, _ in answers]
    assert len(seen) >= 20
    assert seen[0] == "1" and seen[-1] == "2" and set(seen) == {"1", "2"}
    assert ok(requests.get(f"{url}/info", timeout=TIMEOUT))["model_version"] == "2"


def test_a_version_that_does_not_load_leaves_the_served_one_in_place(service, tmp_path):
    """The alias moved to a version without a checkpoint: the replica keeps answering with the version it has,
    says why in /info, and follows the alias again once it moves on."""
    from seqlvm.tracking import registry as versions

    client = service["registry"]
    url = service["champion"]
    (tmp_path / "empty").mkdir()
    broken = client.create_model_version(REGISTERED, source=str(tmp_path / "empty")).version
    before = ok(requests.get(f"{url}/info", timeout=TIMEOUT))["model_version"]
    versions.set_alias(client, REGISTERED, broken)
    try:
        info = wait_for(lambda: ok(requests.get(f"{url}/info", timeout=TIMEOUT))["follow_problem"] and
                        ok(requests.get(f"{url}/info", timeout=TIMEOUT)), TIMEOUT, "the problem reported")
        assert info["model_version"] == before and f"version {broken} did not load" in info["follow_problem"]
        assert ok(post(url, "/reconstruct", {"sentences": SENTENCES}))["model_version"] == before
    finally:
        versions.set_alias(client, REGISTERED, "1")
    wait_for(lambda: ok(requests.get(f"{url}/info", timeout=TIMEOUT))["model_version"] == "1", TIMEOUT,
             "version 1 served again")
    assert ok(requests.get(f"{url}/info", timeout=TIMEOUT))["follow_problem"] is None


# The documentation's client
def test_the_client_example_in_the_docs_runs_against_the_service(service, capsys):
    page = (REPO / "docs" / "serving.md").read_text()
    example = page.split("## Client example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    assert 'URL = "http://127.0.0.1:8000"' in code
    exec(compile(code.replace("http://127.0.0.1:8000", service["text"]), "docs/serving.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "sentence-vae version None can sample, reconstruct, encode, interpolate, score"
    assert len(printed) == 5 and "nats  the cat sat on the dog ." in printed[2]
    assert printed[-1].startswith("400 ") and "zebra" in printed[-1]


# The command line
def test_the_command_serves_until_sigint_and_then_stops_cleanly(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    output = tmp_path / "serve.out"
    with open(output, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "seqlvm.cli", "serve", str(CHECKPOINTS / "sentence-vae.pt"),
                                    "--port", str(port), "--replica-cpus", "0.5"],
                                   cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "serving until Ctrl-C" in output.read_text() or process.poll() is not None, 120,
                 "the command to serve", log=output)
        assert process.poll() is None, output.read_text()
        text = output.read_text()
        assert f"at http://127.0.0.1:{port}" in text and "operations: sample, reconstruct" in text
        answer = ok(post(f"http://127.0.0.1:{port}", "/reconstruct", {"sentences": SENTENCES}))
        assert len(answer["sentences"]) == 2
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, not every interface
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = output.read_text()
    assert text.rstrip().endswith("stopped") and "Traceback" not in text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/info", timeout=5)


def test_on_a_joined_cluster_the_service_stays_after_the_command_until_stopped(service, tmp_path):
    """With --address, the command deploys a detached application on the cluster's Serve (at the address Serve
    already has) and returns; --stop removes it and leaves the other applications running."""
    import ray

    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "seqlvm.cli", "serve"]
    started = subprocess.run([*command, str(CHECKPOINTS / "vrnn.pt"), "--address", address, "--name", "joined",
                              "--route-prefix", "/joined", "--replica-cpus", "0.25"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr[-3000:]
    url = service["text"].rsplit("/", 1)[0] + "/joined"
    assert f"vrnn on midi at {url}" in started.stdout
    assert "seqlvm serve --stop --name joined --address" in started.stdout
    assert ok(requests.get(f"{url}/info", timeout=TIMEOUT))["family"] == "vrnn"
    stopped = subprocess.run([*command, "--stop", "--name", "joined", "--address", address], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr[-3000:]
    wait_for(lambda: requests.get(f"{url}/info", timeout=TIMEOUT).status_code == 404, TIMEOUT, "the application gone")
    assert ok(requests.get(f"{service['text']}/info", timeout=TIMEOUT))["family"] == "sentence-vae"


def test_bad_command_lines_are_refused_in_one_line_before_ray_starts(tmp_path, capsys):
    from seqlvm import cli

    cases = [(["serve", str(tmp_path / "missing")], "no such checkpoint"),
             (["serve", str(CHECKPOINTS / "vrnn.pt"), "--replicas", "0"], "--replicas 0: at least 1"),
             (["serve", str(CHECKPOINTS / "vrnn.pt"), "--autoscale", "4:2"], "--autoscale 4:2"),
             (["serve", str(CHECKPOINTS / "vrnn.pt"), "--autoscale", "two"], "expected MIN:MAX"),
             (["serve", "models:/nothing@champion", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
              "no version of 'nothing' holds the alias 'champion'"),
             (["serve", "--stop"], "--stop needs the cluster's --address")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases.append((["serve", str(CHECKPOINTS / "vrnn.pt"), "--port", str(taken.getsockname()[1])],
                      "cannot listen on 127.0.0.1"))
        for argv, reason in cases:
            assert cli.main(argv) == 2, argv
            errors = capsys.readouterr().err.strip().splitlines()
            assert len(errors) == 1 and errors[0].startswith("seqlvm: error: ") and reason in errors[0], errors
