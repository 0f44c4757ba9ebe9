"""Datasets at URIs: prepared once, read back through pyarrow's filesystems (file:// and a real S3 API served by
moto on 127.0.0.1), streamed by Ray Data from S3, and the one-line errors of locations that hold no dataset."""
from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from rich.console import Console

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.epoch_reading import ShardsInMemory, StreamedWindows, epoch_batches
from pipelines.epochs import Batching, EpochPlanner
from pipelines.errors import SeqlvmError
from pipelines.shards import read_manifest, resolve
from pipelines.text import TextOptions, prepare_text
from pipelines.vocab import Vocab
from pipelines.work import OnRay
from seqlvm.training import TrainRequest, prepare_run
from seqlvm.training.evaluate import check_same_kind_of_data
from tests.conftest import SMALL_CORPUS, write_corpus

OPTIONS = dict(valid_fraction=0.2, test_fraction=0.2, shard_size=7)
BUCKET = "seqlvm-test"
MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.txt", SMALL_CORPUS)


def same_data(location, local: Path) -> None:
    """The dataset at `location` reads back exactly as the local one."""
    theirs, ours = read_manifest(location), read_manifest(local)
    assert {k: v for k, v in theirs.items() if k != "seconds"} == {k: v for k, v in ours.items() if k != "seconds"}
    assert Vocab.of_dataset(location).words == Vocab.of_dataset(local).words
    for split in ("train", "valid", "test"):
        got, want = PreparedDataset.open(location).read(split), PreparedDataset.open(local).read(split)
        assert len(got) == len(want) > 0
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_file_uri_round_trip(tmp_path, corpus):
    local = tmp_path / "local"
    prepare_text(str(corpus), local, TextOptions(**OPTIONS))
    uri = (tmp_path / "remote").as_uri()  # file:///...
    manifest = prepare_text(str(corpus), uri, TextOptions(**OPTIONS))
    assert manifest["fingerprint"] == read_manifest(local)["fingerprint"]
    same_data(uri, local)
    assert Vocab.load(f"{uri}/vocab.json").words == Vocab.load(local / "vocab.json").words
    # what train/tune/evaluate read first
    loaded, _ = prepare_run(TrainRequest(data_dir=uri))
    assert loaded.fingerprint == manifest["fingerprint"] and loaded.vocab.words == Vocab.of_dataset(local).words
    check_same_kind_of_data(DataDescription.of_dataset(PreparedDataset.open(local)), loaded)

    out = io.StringIO()
    prepare_text(str(corpus), uri, TextOptions(**OPTIONS), console=Console(file=out))
    assert "nothing to do" in out.getvalue()
    with pytest.raises(SeqlvmError, match="holds a dataset prepared from other input or options, .*; pass --overwrite"):
        prepare_text(str(corpus), uri, TextOptions(**{**OPTIONS, "shard_size": 3}))


@pytest.mark.parametrize("location, message", [
    ("ftp://example.org/data", "not a local path or a URI pyarrow can open (Unrecognized filesystem type"),
    ("nope://bucket/data", "not a local path or a URI pyarrow can open"),
])
def test_unsupported_scheme_is_one_line(location, message, corpus):
    for action in (lambda: read_manifest(location), lambda: prepare_text(str(corpus), location, TextOptions()),
                   lambda: PreparedDataset.open(location).read("train")):
        with pytest.raises(SeqlvmError) as error:
            action()
        assert str(error.value).startswith(f"{location}: {message}") and "\n" not in str(error.value)


def test_file_uri_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    uri = (tmp_path / "empty").as_uri()
    with pytest.raises(SeqlvmError, match=f"^{uri}: not a prepared dataset \\(no manifest.json\\)"):
        read_manifest(uri)


# --- a real S3 API: moto's server on 127.0.0.1, started and stopped by PID ---

@pytest.fixture(scope="module")
def s3_endpoint():
    if not MOTO.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]', in the test extra)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        # Credentials and endpoint in the URI: nothing from this process's environment is needed to use it.
        creator, _ = pafs.FileSystem.from_uri(f"s3://test:test@{BUCKET}?endpoint_override={endpoint}"
                                              "&region=us-east-1&allow_bucket_creation=true")
        creator.create_dir(BUCKET)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    """How a user points pyarrow at an S3-compatible store: the standard AWS variables."""
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_endpoint


def listing(location: str) -> list[str]:
    filesystem, root = resolve(location)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(root) + 1:] for i in infos if i.type == pafs.FileType.File)


def test_s3_prepare_read_rerun_overwrite(s3_env, tmp_path, corpus):
    local = tmp_path / "local"
    prepare_text(str(corpus), local, TextOptions(**OPTIONS))
    uri = f"s3://{BUCKET}/prepared/text"
    manifest = prepare_text(str(corpus), uri, TextOptions(**OPTIONS))
    same_data(uri, local)
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    assert listing(uri) == sorted(["manifest.json", "vocab.json", *shards])  # no temporary objects left

    out = io.StringIO()
    prepare_text(str(corpus), uri, TextOptions(**OPTIONS), console=Console(file=out))
    assert "nothing to do" in out.getvalue()

    fewer = {**OPTIONS, "shard_size": 50}
    with pytest.raises(SeqlvmError, match=f"^{uri}: holds a dataset prepared from other input or options, .*; "
                                          "pass --overwrite"):
        prepare_text(str(corpus), uri, TextOptions(**fewer))
    assert read_manifest(uri)["fingerprint"] == manifest["fingerprint"]
    # a prepare that fails (here: an empty corpus) leaves the dataset there untouched
    empty = write_corpus(tmp_path / "empty.txt", [""])
    with pytest.raises(SeqlvmError, match="no sentences"):
        prepare_text(str(empty), uri, TextOptions(**fewer), overwrite=True)
    assert listing(uri) == sorted(["manifest.json", "vocab.json", *shards])

    replaced = prepare_text(str(corpus), uri, TextOptions(**fewer), overwrite=True)
    assert replaced["fingerprint"] != manifest["fingerprint"]
    assert read_manifest(uri) == replaced
    shards = [s for split in replaced["splits"].values() for s in split["shards"]]
    assert listing(uri) == sorted(["manifest.json", "vocab.json", *shards])  # the old, extra shards are gone


def test_s3_locations_that_hold_no_dataset(s3_env, corpus):
    with pytest.raises(SeqlvmError, match=f"^s3://{BUCKET}/nothing: not a prepared dataset \\(no manifest.json\\)"):
        read_manifest(f"s3://{BUCKET}/nothing")
    with pytest.raises(SeqlvmError, match="^s3://no-such-bucket/x: not a prepared dataset"):
        prepare_run(TrainRequest(data_dir="s3://no-such-bucket/x"))
    with pytest.raises(SeqlvmError) as error:
        prepare_text(str(corpus), "s3://no-such-bucket/x", TextOptions(**OPTIONS))
    assert str(error.value).startswith("s3://no-such-bucket/x: cannot write there (") and "\n" not in str(error.value)
    assert listing("s3://no-such-bucket/x") == []
    # shards listed by a manifest but missing: reading says which
    uri = f"s3://{BUCKET}/broken"
    manifest = prepare_text(str(corpus), uri, TextOptions(**OPTIONS))
    filesystem, root = resolve(uri)
    filesystem.delete_file(f"{root}/{manifest['splits']['train']['shards'][0]}")
    with pytest.raises(SeqlvmError, match=f"^{uri}: cannot read the shard .*part-00000-00000.parquet"):
        PreparedDataset.open(uri).read("train")


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ray_data_streams_from_s3(ray_session, s3_endpoint, tmp_path, corpus):
    """A worker's windows streamed by Ray Data from S3 give the batches read into memory. Ray's read tasks run in
    worker processes started without any AWS variables: the filesystem handed to
    them carries the endpoint and the credentials of the URI."""
    ray = ray_session
    uri = (f"s3://test:test@{BUCKET}/streamed?endpoint_override={s3_endpoint}&region=us-east-1")
    manifest = prepare_text(str(corpus), uri, TextOptions(**OPTIONS))
    dataset = PreparedDataset.open(uri)
    assert dataset.ray_dataset("valid").count() == manifest["splits"]["valid"]["sequences"]
    # the path of a training split too large for memory: each worker streams its windows of the epoch plan
    # through Ray Data (in its own process, as a Train worker would); the batches are those read from memory
    planner = EpochPlanner(dataset.padded_lengths("train"), Batching(2, 2), 2)
    plan = planner.plan(1)
    assert len(planner.windows) > 2 and len(dataset.splits["train"].shards) > 1

    @ray.remote(num_cpus=0.5)
    def streamed(rank: int, steps_taken: int) -> list:
        source = StreamedWindows(dataset, window_bytes=64, execution_windows=2)  # several executions an epoch
        return [(b.shard, b.rows.tolist(), {k: v.tolist() for k, v in b.tensors.items()})
                for b in epoch_batches(planner, plan, rank, steps_taken, source, dataset.layout)]

    in_memory = ShardsInMemory(dataset)
    rows = 0
    for rank, steps_taken in ((0, 0), (1, 0), (1, 3)):
        want = [(b.shard, b.rows.tolist(), {k: v.tolist() for k, v in b.tensors.items()})
                for b in epoch_batches(planner, plan, rank, steps_taken, in_memory, dataset.layout)]
        assert ray.get(streamed.remote(rank, steps_taken)) == want
        rows += sum(len(r) for _, r, _ in want) if steps_taken == 0 else 0
    assert rows == manifest["splits"]["train"]["sequences"] == len(dataset.read("train"))


def test_text_sources_on_s3_are_read_in_place_in_ranges(s3_env, tmp_path, monkeypatch):
    folder = tmp_path / "sources"
    for name, sentences in (("a.txt", SMALL_CORPUS), ("nested/b.txt", SMALL_CORPUS[::-1] * 2)):
        write_corpus(folder / name, sentences)
    filesystem, root = resolve(f"s3://{BUCKET}/sources")
    pafs.copy_files(str(folder), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)
    monkeypatch.setattr("pipelines.text_sources.RANGE_BYTES", 500)
    remote = prepare_text(f"s3://{BUCKET}/sources", tmp_path / "from-s3", TextOptions(**OPTIONS))
    local = prepare_text(str(folder), tmp_path / "from-disk", TextOptions(**OPTIONS))
    assert remote["packs"] == local["packs"] > 2
    assert remote["splits"] == local["splits"]
    assert Vocab.of_dataset(tmp_path / "from-s3").words == Vocab.of_dataset(tmp_path / "from-disk").words
    for split in ("train", "valid", "test"):
        got, want = (PreparedDataset.open(tmp_path / name).read(split) for name in ("from-s3", "from-disk"))
        assert len(got) == len(want) > 0 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_ray_tasks_write_a_dataset_to_s3_through_a_staging_prefix(ray_session, s3_endpoint, tmp_path, corpus):
    """Tasks in worker processes started without AWS variables write their shards to S3 (the staging folder they
    are handed carries the endpoint and credentials), and the dataset is the one written in this process."""
    uri = f"s3://test:test@{BUCKET}/from-tasks?endpoint_override={s3_endpoint}&region=us-east-1"
    on_ray = prepare_text(str(corpus), uri, TextOptions(**OPTIONS), work=OnRay())
    local = prepare_text(str(corpus), tmp_path / "local", TextOptions(**OPTIONS))
    assert on_ray["splits"] == local["splits"] and len(on_ray["splits"]["train"]["shards"]) > 1
    same_data(uri, tmp_path / "local")
    filesystem, root = resolve(uri)
    shards = [s for split in on_ray["splits"].values() for s in split["shards"]]
    assert listing(uri) == sorted(["manifest.json", "vocab.json", *shards])
    bucket = filesystem.get_file_info(pafs.FileSelector(BUCKET, recursive=True))
    assert not [info.path for info in bucket if ".staging-" in info.path], "the staging prefix is removed"
