"""Latency and throughput of `seqlvm serve`'s `POST /reconstruct` on this machine: 1, 8 and 32 clients, each
sending one Shakespeare test sentence a request as fast as its answers come back, against one replica with
dynamic batching (up to 16 requests a model call) and against the same replica without it (1 a call). The
service runs on a local Ray as `seqlvm serve` deploys it; the clients are threads of this process (requests),
so on a small machine they share its cores with the service.

The model is a sentence VAE of the main job's sizes (seqlvm/configs/sentence-vae.yaml) on the prepared
Shakespeare corpus, untrained unless --checkpoint names one: an untrained decoder never ends a sentence early,
so every decode runs the full --max-len tokens (a trained model's are shorter, and faster).

    .venv/bin/python benchmarks/serve_latency.py                  # ~2 min on 2 CPU cores
    .venv/bin/python benchmarks/serve_latency.py --checkpoint models:/sentence-vae-shakespeare@champion
    .venv/bin/python benchmarks/serve_latency.py --requests 40    # smoke run
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402
from _common import DEFAULT_DATA, MODEL, prepare_shakespeare  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.dataset import PreparedDataset  # noqa: E402
from pipelines.description import DataDescription  # noqa: E402
from seqlvm.checkpoint import save_checkpoint  # noqa: E402
from seqlvm.cluster.ray_runtime import ensure_ray  # noqa: E402
from seqlvm.models import build_model  # noqa: E402
from seqlvm.serving import launch  # noqa: E402
from seqlvm.serving.settings import ServeSettings  # noqa: E402

CLIENTS = (1, 8, 32)
BATCHES = {"batched (16)": 16, "unbatched (1)": 1}


def untrained_checkpoint(data_dir: Path, folder: Path) -> Path:
    data = DataDescription.of_dataset(PreparedDataset.open(data_dir))
    model = build_model("sentence-vae", MODEL, data.input_size)
    return save_checkpoint(folder, model, data=data.to_dict(), config={})


def test_sentences(data_dir: Path, count: int = 500) -> list[str]:
    dataset = PreparedDataset.open(data_dir)
    data = DataDescription.of_dataset(dataset)
    rows = dataset.read("test", limit=count)
    return [data.text(row) for row in rows]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load(url: str, sentences: list[str], clients: int, total: int, max_len: int) -> dict:
    """`total` requests from `clients` threads, each waiting for its answer before the next: latencies (s) and
    requests answered per second."""
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                body = {"sentences": [sentences[index % len(sentences)]], "max_len": max_len, "unknown": "map"}
                started = time.perf_counter()
                answer = session.post(f"{url}/reconstruct", json=body, timeout=120)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(answer.text[:200])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50": cuts[49], "p99": cuts[98], "rps": len(latencies) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the model to serve (default: an untrained sentence VAE)")
    parser.add_argument("--tracking-uri", help="for a models:/ or runs:/ checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="prepared Shakespeare (prepared if missing)")
    parser.add_argument("--requests", type=int, default=320, help="requests at each number of clients")
    parser.add_argument("--max-len", type=int, default=20, help="tokens decoded per sentence")
    args = parser.parse_args()
    console = Console(width=150)

    data_dir, _ = prepare_shakespeare(args.data, console=console)
    sentences = test_sentences(data_dir)
    checkpoint = args.checkpoint or str(untrained_checkpoint(data_dir, Path(tempfile.mkdtemp(prefix="serve-bench-"))))
    ensure_ray(cpus=4)
    port = free_port()
    settings = [ServeSettings(checkpoint, args.tracking_uri, name=name.split()[0], route_prefix=f"/{size}",
                              port=port, max_batch_size=size)
                for name, size in BATCHES.items()]
    try:
        urls = dict(zip(BATCHES, launch.deploy(*settings)))
        for url in urls.values():
            load(url, sentences, 4, 16, args.max_len)  # warm up: first calls, connection pools
        results = {(name, clients): load(url, sentences, clients, args.requests, args.max_len)
                   for clients in CLIENTS for name, url in urls.items()}
    finally:
        launch.shutdown()

    table = Table(title=f"POST /reconstruct, one sentence a request, {args.max_len} tokens decoded, 1 replica; "
                        f"{args.requests} requests at each level, on {os.cpu_count()} CPU cores")
    table.add_column("clients", justify="right")
    for name in BATCHES:
        for column in ("p50 ms", "p99 ms", "req/s"):
            table.add_column(f"{name}\n{column}", justify="right")
    table.add_column("throughput\nbatched / unbatched", justify="right")
    for clients in CLIENTS:
        cells = []
        for name in BATCHES:
            result = results[(name, clients)]
            cells += [f"{1000 * result['p50']:.0f}", f"{1000 * result['p99']:.0f}", f"{result['rps']:.1f}"]
        ratio = results[(list(BATCHES)[0], clients)]["rps"] / results[(list(BATCHES)[1], clients)]["rps"]
        table.add_row(str(clients), *cells, f"{ratio:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
