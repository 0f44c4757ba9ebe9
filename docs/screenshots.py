"""Screenshots of what MLflow's UI shows for seqlvm's runs, for the docs: the experiment's runs table, the page of
the run a registered version was logged from (its dataset input and its model), the registered model's page, and
the sweep's objective figure. PNGs in docs/screenshots/. Not run in CI.

    .venv/bin/python docs/screenshots.py [WORKDIR] [--tracking-uri URI] [--experiment seqlvm] [--model NAME]

The store is --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db (WORKDIR: runs). The
script starts `mlflow server` over it on a free port of 127.0.0.1, waits until it answers, drives a headless
Chromium through the DevTools protocol (over aiohttp, which ray[default] installs) and stops the server. An
http(s) tracking URI is a server already and is used as it is.

It needs a Chromium, found as `chromium`, `chromium-browser` or `google-chrome` on PATH, or given with --browser
(Debian: `apt-get install chromium`). No Python package beyond seqlvm's own.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from seqlvm import tracking
from seqlvm.cluster.local_cluster import (
    executable,
    free_port,
    http_ok,
    start,
    wait_until,
)

OUT = Path(__file__).resolve().parent / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1600, 1000)
# MLflow 3.17's UI opens every experiment in its GenAI view unless the sidebar's "Model training" switch (remembered
# by the browser) or this query says otherwise; it no longer reads the experiment's mlflow.experimentKind tag.
MODEL_TRAINING = "?workflowType=machine_learning"
# The assistant panel opens on every fresh browser profile and covers a third of each page.
CLOSE_ASSISTANT = """for (const close of document.querySelectorAll('button[aria-label="Close"]')) {
  let box = close;
  for (let up = 0; up < 4 && box; up++) box = box.parentElement;
  if (box && box.querySelector('button[aria-label="New Chat"]')) close.click();
}"""
EXPAND_PARENT_RUNS = """
document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]').forEach(b => b.click());"""


@dataclass
class Page:
    file: str
    route: str
    shows: str  # text the page holds once its data has loaded
    prepare: str = CLOSE_ASSISTANT


def pages(tracking_uri: str, experiment_name: str, model: str | None) -> list[Page]:
    client = tracking.client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        sys.exit(f"{tracking.redact(tracking_uri)}: no experiment named {experiment_name!r}")
    eid = experiment.experiment_id
    runs = client.search_runs([eid], order_by=["attributes.start_time DESC"], max_results=500)
    if not runs:
        sys.exit(f"experiment {experiment_name!r} has no runs")
    ids = {run.info.run_id for run in runs}
    filter_ = f"name = '{model}'" if model else ""
    versions = [v for v in client.search_model_versions(filter_) if v.run_id in ids]
    version = max(versions, key=lambda v: v.creation_timestamp, default=None)
    if model and version is None:
        sys.exit(f"no version of {model!r} was logged from a run of experiment {experiment_name!r}")
    run = client.get_run(version.run_id) if version else runs[0]
    top = next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), runs[0])  # the table nests the rest
    shown = [Page("experiment.png", f"experiments/{eid}/runs", top.info.run_name,
                  CLOSE_ASSISTANT + EXPAND_PARENT_RUNS),
             Page("run.png", f"experiments/{eid}/runs/{run.info.run_id}", "Datasets")]
    if version:
        shown.append(Page("registered-model.png", f"models/{version.name}", f"Version {version.version}"))
    parent = run.data.tags.get("mlflow.parentRunId")
    if parent and "figures/objective_by_trial.png" in {f.path for f in client.list_artifacts(parent, "figures")}:
        shown.append(Page("sweep-objective.png",
                          f"experiments/{eid}/runs/{parent}/artifacts/figures/objective_by_trial.png",
                          "objective_by_trial.png"))
    return shown


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, workdir: Path, folder: Path):
    """The base URL of an MLflow server over the store: the tracking URI itself if it is one, else a server this
    script starts (and stops)."""
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri.rstrip("/")
        return
    port, log = free_port(), folder / "mlflow.log"
    server = start([executable("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--backend-store-uri", tracking_uri,
                    "--artifacts-destination", str((workdir / "mlartifacts").absolute())], log,
                   {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120, "the MLflow server", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def find_browser(given: str | None) -> str:
    found = given or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        sys.exit(f"no Chromium found ({', '.join(BROWSERS)} on PATH); install one (Debian: apt-get install "
                 "chromium) or pass --browser PATH")
    return found


@contextlib.contextmanager
def headless_browser(browser: str, folder: Path):
    """A headless Chromium listening for the DevTools protocol; yields the WebSocket URL of its page."""
    port = free_port()
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses to run as root with its sandbox
    with open(folder / "browser.log", "wb") as log:
        process = subprocess.Popen([browser, "--headless", "--disable-gpu", "--hide-scrollbars", *sandbox,
                                    f"--remote-debugging-port={port}", f"--user-data-dir={folder / 'profile'}",
                                    f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/json/version"), 60, "Chromium", folder / "browser.log")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        yield next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()


class DevTools:
    """The few DevTools protocol commands a screenshot needs, one at a time over the page's WebSocket."""

    def __init__(self, socket):
        self.socket, self.ids = socket, itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        await self.socket.send_json({"id": message_id, "method": method, "params": params})
        while True:  # events arrive in between; they are not needed
            reply = await self.socket.receive_json()
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def shoot(self, url: str, page: Page, path: Path, timeout: float = 60) -> None:
        await self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while not await self.evaluate(f"!!document.body && document.body.innerText.includes({page.shows!r})"):
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not show {page.shows!r} within {timeout:.0f} s")
            await asyncio.sleep(0.5)
        await self.evaluate(page.prepare)
        await asyncio.sleep(2)  # what the page loads after its first data: charts, images, the expanded rows
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


async def take(socket_url: str, base: str, shown: list[Page], out: Path) -> list[Path]:
    import aiohttp

    written = []
    async with aiohttp.ClientSession() as session, session.ws_connect(socket_url, max_msg_size=0) as socket:
        devtools = DevTools(socket)
        await devtools.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                            deviceScaleFactor=1, mobile=False)
        for page in shown:
            written.append(out / page.file)
            await devtools.shoot(f"{base}/#/{page.route}{MODEL_TRAINING}", page, written[-1])
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", default="runs", type=Path)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--experiment", default="seqlvm")
    parser.add_argument("--model", help="registered model to show (default: the newest version from the experiment)")
    parser.add_argument("--browser", help="a Chromium executable")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    tracking_uri = tracking.resolve_tracking_uri(args.tracking_uri, args.workdir)
    browser = find_browser(args.browser)
    shown = pages(tracking_uri, args.experiment, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, mlflow_ui(tracking_uri, args.workdir, Path(tmp)) as base, \
            headless_browser(browser, Path(tmp)) as socket_url:
        for path in asyncio.run(take(socket_url, base, shown, args.out)):
            print(path)


if __name__ == "__main__":
    main()
