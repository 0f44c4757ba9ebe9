"""The rows of a reproduction as one Ray Tune run: a trial per row, as many at once as the cluster has CPUs for,
each row's work logged as a child of the reproduction's MLflow run. A row that fails (NaN losses, a killed
worker) becomes a failed line of its table, not the end of the run."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune
from ray.tune import Callback

from pipelines.errors import root_cause
from seqlvm import tracking
from seqlvm.reproduction.table import Line, Row, RowOutcome, RowRun
from seqlvm.run_log import duration, tell

PROGRESS_EVERY_S = 30  # a running row's step line, at most this often


@dataclass(frozen=True)
class RowContext:
    """What every row's trial shares: the budget, the prepared data, and the MLflow run its run is a child of."""
    budget: str
    data_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    name: str


def run_row(config: dict) -> None:
    """One trial: the row's runner in this Ray worker, its outcome reported to Tune as JSON."""
    import torch

    from seqlvm.reproduction.tables import TABLES

    row, context = Row.from_dict(config["rows"][config["index"]]), RowContext(**config["context"])
    torch.set_num_threads(max(1, int(row.cpus)))
    run_id, _ = tracking.start_or_resume_run(context.tracking_uri, context.experiment_id,
                                             f"{context.name}-{row.table}-{row.name}", {
                                                 "mlflow.parentRunId": context.parent_run_id,
                                                 "seqlvm.reproduce.table": row.table, "seqlvm.reproduce.row": row.name})
    tracking.log_params(context.tracking_uri, run_id, {
        "budget": context.budget, **tracking.flatten("settings", row.settings),
        **({"data.name": row.data.name, "data.fingerprint": row.data.fingerprint} if row.data else {})})
    metrics = tracking.MetricLogger(context.tracking_uri, run_id)
    last_report = [0.0]

    def log(step: int, values: dict) -> None:
        metrics.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step)
        if time.time() - last_report[0] > PROGRESS_EVERY_S:
            last_report[0] = time.time()
            tune.report({"step": step})

    work = RowRun(context.budget, Path(context.data_dir), log, "cuda" if row.gpus else "cpu")
    started = time.time()
    try:
        lines = TABLES[row.table].run(row, work)
        outcome = RowOutcome(row, tuple(lines), work.steps, time.time() - started)
    except Exception as exc:  # a row's failure (NaN losses, bad settings) is a failed line of its table
        outcome = RowOutcome(row, (), work.steps, time.time() - started, root_cause(exc))
    metrics.log({metric_name(line): line.ours for line in outcome.lines if line.ours is not None}, work.steps)
    tracking.client(context.tracking_uri).set_terminated(run_id, "FAILED" if outcome.failure else "FINISHED")
    tune.report({"outcome": json.dumps(outcome.to_dict())})


def metric_name(line: Line) -> str:
    """The line's MLflow metric name: its label and metric, with what MLflow refuses in a name replaced."""
    return re.sub(r"[^\w\-. :/]", "_", f"{line.label}/{line.metric}")


class RowProgress(Callback):
    """A line as each row ends (with the whole run's ETA), and a running row's step at most every 30 s."""

    def __init__(self, rows: list[Row]):
        self.total, self.done, self.started = len(rows), 0, time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = trial.config["rows"][trial.config["index"]]
        if "outcome" in result:
            self.done += 1
            outcome = RowOutcome.from_dict(json.loads(result["outcome"]))
            status = f"failed ({outcome.failure})" if outcome.failure else "done"
            left = self.total - self.done
            eta = f" | ETA {duration((time.time() - self.started) / self.done * left)}" if left else ""
            tell(f"[{self.done}/{self.total}] {row['table']} / {row['name']}: {status} in "
                 f"{duration(outcome.seconds)}, {outcome.steps} steps{eta}")
        elif "step" in result:
            of = f"/{row['settings']['steps']}" if "steps" in row["settings"] else ""
            tell(f"      {row['table']} / {row['name']}: step {result['step']}{of}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        row = trial.config["rows"][trial.config["index"]]
        tell(f"[{self.done}/{self.total}] {row['table']} / {row['name']}: its trial crashed (the error is in the log)")


def run_rows(rows: list[Row], context: RowContext, storage: str) -> list[RowOutcome]:
    """Every row's outcome, in the order of `rows`; a trial that crashed (a killed worker) is a failed outcome. As
    many rows run at once as the cluster has CPUs for."""
    tuner = tune.Tuner(
        tune.with_resources(run_row, lambda config: {"CPU": config["rows"][config["index"]]["cpus"],
                                                     "GPU": config["rows"][config["index"]]["gpus"]}),
        param_space={"index": tune.grid_search(list(range(len(rows)))), "rows": [row.to_dict() for row in rows],
                     "context": dataclasses.asdict(context)},
        tune_config=tune.TuneConfig(reuse_actors=True),  # a row after another skips a process start
        run_config=tune.RunConfig(name=context.name, storage_path=storage, verbose=0,
                                  callbacks=[RowProgress(rows)]))
    results = tuner.fit()
    by_name = {}
    for result in results:
        row = Row.from_dict(result.config["rows"][result.config["index"]])
        if result.metrics and "outcome" in result.metrics:
            by_name[(row.table, row.name)] = RowOutcome.from_dict(json.loads(result.metrics["outcome"]))
        else:
            reason = root_cause(result.error) if result.error else "its trial ended without an outcome"
            by_name[(row.table, row.name)] = RowOutcome(row, failure=f"trial crashed: {reason}")
    return [by_name.get((row.table, row.name), RowOutcome(row, failure="its trial did not run")) for row in rows]
