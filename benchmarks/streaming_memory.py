"""Peak memory of the streaming training path as the corpus grows: the built-in Shakespeare corpus (1x) and a
corpus N times larger (default 10x, its training shards repeated: copies of the Parquet files, listed in a copy
of the manifest) are each read once the way a Ray Train worker reads a training split too large for memory
(seqlvm/training/data.py, pipelines/epoch_reading.py): the epoch plan of one worker (pipelines/epochs.py), its
windows streamed through Ray Data one block per window with a read-ahead of two windows' bytes of object store
(`StreamedWindows`), cut into length-bucketed, padded batches (`epoch_batches`), with the default training
configuration, in a Ray actor (a fresh one per pass).

While each pass runs, a thread in the driver samples every 0.2 s the resident memory (RSS) of the driver and
of every Ray worker process below it (`ray::...`: read tasks, the consumer) and the object store's usage; the
consumer also reports its own high-water RSS. Both passes share one Ray instance (num_cpus=4,
object_store_memory=512 MiB), after a warm-up pass, the 1x baseline first; the last row is the ratio of the
Nx pass's figures to the 1x pass's.

    .venv/bin/python benchmarks/streaming_memory.py                                   # ~2 min on 2 cores
    .venv/bin/python benchmarks/streaming_memory.py --data s3://bucket/shakespeare --scratch s3://bucket/tmp
(Linux: the driver finds Ray's processes among its descendants. A --scratch URI takes no query string: give
S3 endpoints and credentials in the AWS_* variables.)
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import ray  # noqa: E402, I001  (first: it puts its bundled psutil on sys.path)
import pyarrow.fs as pafs  # noqa: E402
from _common import DEFAULT_DATA  # noqa: E402
from _memory import Sampler  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.dataset import Split  # noqa: E402
from pipelines.shards import MANIFEST, read_manifest, resolve  # noqa: E402
from pipelines.text import TextOptions, prepare_text  # noqa: E402
from pipelines.vocab import VOCAB_FILE  # noqa: E402
from seqlvm.training.spec import TrainConfig  # noqa: E402

MB = 2**20


def build_corpus(source: str, target: str, factor: int) -> dict:
    """Copy the dataset at `source` to `target` with each training shard repeated `factor` times (the other
    splits once), and a manifest listing the copies. Either location may be a URI."""
    manifest = read_manifest(source)
    src_fs, src_root = resolve(source)
    dst_fs, dst_root = resolve(target)
    dst_fs.create_dir(dst_root, recursive=True)

    def copy(name: str, new_name: str) -> None:
        dst_fs.create_dir(f"{dst_root}/{new_name}".rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(f"{src_root}/{name}", f"{dst_root}/{new_name}", source_filesystem=src_fs,
                        destination_filesystem=dst_fs)

    copy(VOCAB_FILE, VOCAB_FILE)
    splits = {}  # counts of either naming (datasets prepared before the names were shared say sentences/tokens)
    for split, info in manifest["splits"].items():
        repeat = factor if split == "train" else 1
        shards = []
        for shard in info["shards"]:
            for k in range(repeat):
                name = shard if repeat == 1 else shard.replace(".parquet", f"-r{k:02d}.parquet")
                copy(shard, name)
                shards.append(name)
        splits[split] = {**info, "shards": shards,
                         **{key: value * repeat for key, value in info.items() if key != "shards"}}
    manifest = {**manifest, "splits": splits, "source": f"{manifest['source']} x{factor}",
                "fingerprint": f"{manifest['fingerprint']}-x{factor}"}
    with dst_fs.open_output_stream(f"{dst_root}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, indent=2).encode())
    return manifest


def make_consumer():
    @ray.remote(num_cpus=1)
    class Consumer:
        """What a Train worker does with its share of the training split, minus the model."""

        def consume(self, data: str, cfg: TrainConfig) -> dict:
            import resource

            from pipelines.dataset import PreparedDataset
            from pipelines.epoch_reading import epoch_batches
            from seqlvm.training.data import epoch_planner, window_source
            rows = batches = 0
            started = time.time()
            dataset = PreparedDataset.open(data)
            planner = epoch_planner(dataset, cfg, world=1)
            source = window_source(dataset, planner, materialise_bytes=0)  # streamed, whatever its size
            for batch in epoch_batches(planner, planner.plan(0), 0, 0, source, dataset.layout):
                rows += len(batch.rows)
                batches += 1
            return {"rows": rows, "batches": batches, "seconds": time.time() - started,
                    "consumer_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    return Consumer


def stream(data: str, cfg: TrainConfig) -> dict:
    consumer = make_consumer().remote()
    ray.get(consumer.__ray_ready__.remote())  # its start-up (importing torch) is not part of the pass
    sampler = Sampler()
    sampler.start()
    started = time.time()
    result = ray.get(consumer.consume.remote(data, cfg))
    result["wall"] = time.time() - started
    result.update(sampler.finish())
    ray.kill(consumer)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="a prepared text dataset (path or URI); prepared from builtin:shakespeare if absent")
    parser.add_argument("--scratch", default=None, help="where the 1x and Nx copies go (path or URI; default: a "
                                                        "temporary folder, removed afterwards)")
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    console = Console(width=140)

    started = time.time()
    prepare_text("builtin:shakespeare", args.data, TextOptions(), console=console)
    console.print(f"data {args.data} ready in {time.time() - started:.0f} s")
    cfg = TrainConfig()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=512 * MB)

    with tempfile.TemporaryDirectory(prefix="seqlvm-streaming-") as tmp:
        scratch = (args.scratch or tmp).rstrip("/")
        corpora = {factor: build_corpus(args.data, f"{scratch}/x{factor}", factor) for factor in (1, args.factor)}
        stream(f"{scratch}/x1", cfg)  # warm-up: Ray Data's first execution starts its worker processes
        results = {}
        for factor, manifest in corpora.items():
            console.print(f"{factor}x: {Split.from_manifest(manifest['splits']['train']).sequences:,} training sentences in "
                          f"{len(manifest['splits']['train']['shards'])} shards; streaming...")
            results[factor] = stream(f"{scratch}/x{factor}", cfg)
            results[factor]["expected"] = Split.from_manifest(manifest["splits"]["train"]).sequences
    ray.shutdown()

    table = Table(title=f"A worker's epoch plan streamed through Ray Data, one window a block (batch "
                        f"{cfg.batch_size}, bucket factor {cfg.bucket_factor}); peak RSS and object-store use in MB")
    for column in ("corpus", "rows", "batches", "seconds", "driver", "consumer (Train worker)",
                   "largest Ray worker", "driver + all Ray workers", "object store"):
        table.add_column(column, justify="right")

    def row(name: str, values: list) -> None:
        table.add_row(name, *values)

    def mb(value) -> str:
        return "n/a" if value is None else f"{value / MB:,.1f}"

    keys = ("driver", "consumer_peak", "worker", "total", "store")
    for factor, r in results.items():
        assert r["rows"] == r["expected"], f"{factor}x: streamed {r['rows']} rows of {r['expected']}"
        row(f"{factor}x", [f"{r['rows']:,}", f"{r['batches']:,}", f"{r['wall']:.1f}", *(mb(r[k]) for k in keys)])
    base, big = results[1], results[args.factor]

    def ratio(key: str) -> str:
        return "n/a" if not base[key] or big[key] is None else f"{big[key] / base[key]:.2f}"
    row(f"{args.factor}x / 1x", [f"{big['rows'] / base['rows']:.1f}", f"{big['batches'] / base['batches']:.1f}",
                                 f"{big['wall'] / base['wall']:.1f}", *(ratio(k) for k in keys)])
    console.print(table)


if __name__ == "__main__":
    main()
