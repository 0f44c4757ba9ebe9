"""`seqlvm reproduce`'s driver: the tables' rows built and their data prepared here (every check before Ray
starts), run as one Tune run on the local or given cluster under one MLflow parent run, then each table written
as Markdown and CSV, logged to that run, and optionally into a results page."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from pipelines.errors import SeqlvmError, root_cause
from seqlvm import run_log, tracking
from seqlvm.cluster.ray_runtime import ensure_ray
from seqlvm.reproduction.report import TableResult, results_block, update_page
from seqlvm.reproduction.request import ReproduceRequest
from seqlvm.reproduction.runner import RowContext, run_rows
from seqlvm.reproduction.tables import TABLES

LOG_DIR = "logs"


def reproduce(request: ReproduceRequest, say=print) -> list[TableResult]:
    request.check(list(TABLES))
    keys = request.tables or tuple(TABLES)
    out = Path(request.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(request.data_root).absolute() if request.data_root else None
    rows = [row for key in keys for row in TABLES[key].rows(request.budget, data_root, out / "data")]
    tracking_uri = tracking.resolve_tracking_uri(request.tracking_uri, out)
    tracking.check_reachable(tracking_uri)
    name = f"reproduce-{request.budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    say(f"reproducing {', '.join(keys)} at budget {request.budget}: {len(rows)} rows as one Tune run "
        f"({tracking_uri}, experiment {request.experiment!r}, run {name})")
    if request.quiet:
        log = out / LOG_DIR / f"{name}.log"
        say(f"Ray's and MLflow's output: {log} (--verbose shows it here)")
        run_log.divert(log)
    ray = ensure_ray(address=request.address, cpus=request.cpus or os.cpu_count() or 1, dashboard=False)
    if ray.cluster_resources().get("GPU"):
        rows = [dataclasses.replace(row, gpus=1.0) for row in rows]
    experiment_id = tracking.ensure_experiment(tracking_uri, request.experiment, out)
    parent_run_id, _ = tracking.start_or_resume_run(tracking_uri, experiment_id, name, {"seqlvm.kind": "reproduce"})
    tracking.log_params(tracking_uri, parent_run_id, {"budget": request.budget, "tables": ",".join(keys),
                                                      "rows": len(rows), "data_root": str(data_root or "")})
    context = RowContext(request.budget, str(out / "data"), tracking_uri, experiment_id, parent_run_id, name)
    mlflow_client = tracking.client(tracking_uri)
    try:
        outcomes = run_rows(rows, context, str(out / "tune"))
        results = [table_result(key, request.budget, outcomes) for key in keys]
        for result in results:
            for path in result.write(out):
                mlflow_client.log_artifact(parent_run_id, str(path), "tables")
        block = results_block(results, f"Run `{name}`, MLflow run `{parent_run_id}`.")
        (out / "results.md").write_text(block + "\n")
        if request.results_page:
            update_page(Path(request.results_page), block)
    except Exception as exc:
        mlflow_client.set_terminated(parent_run_id, status="FAILED")
        raise SeqlvmError(f"reproduction {name} failed: {root_cause(exc)}") from exc
    failed = sum(1 for outcome in outcomes if outcome.failure)
    held = [check.holds for result in results for check in result.checks]
    tracking.MetricLogger(tracking_uri, parent_run_id).log(
        {"rows_failed": failed, "checks_held": sum(held), "checks": len(held)}, 0)
    mlflow_client.set_terminated(parent_run_id, status="FAILED" if failed else "FINISHED")
    return results


def table_result(key: str, budget: str, outcomes) -> TableResult:
    mine = tuple(outcome for outcome in outcomes if outcome.row.table == key)
    lines = [line for outcome in mine for line in outcome.lines]
    return TableResult(TABLES[key], budget, mine, tuple(TABLES[key].checks(lines)))
