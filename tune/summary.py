"""What a finished sweep leaves behind: one row per trial, the child runs ended (their last metrics, outcome and
figures), and on the parent run a summary table, per-trial metrics and two figures (objective by trial with
the best so far; Optuna's parameter importances)."""
from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from pathlib import Path

from pipelines.errors import root_cause
from seqlvm import tracking
from seqlvm.checkpoint import local_copy
from seqlvm.evaluation import COLLAPSE_PENALTY
from seqlvm.training import TrackedRun
from tune.space import Dimension

TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


def _trial_id(result) -> str:
    if result.metrics and result.metrics.get("trial_id"):
        return result.metrics["trial_id"]
    match = TRIAL_ID.search(Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def trial_rows(results, dims: list[Dimension], max_steps: int) -> list[dict]:
    """One row per trial, in the order trials were created."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        step = int(metrics.get("step", 0))
        if result.error is not None:
            outcome = "error"
        else:
            outcome = "finished" if step >= max_steps else "stopped early"
        objective = metrics.get("objective")
        rows.append({
            "trial": _trial_id(result), "outcome": outcome, "step": step,
            "objective": objective if objective is not None and math.isfinite(objective) else None,
            "valid_nll_bound": metrics.get("valid/nll_bound"), "valid_kl": metrics.get("valid/kl"),
            "valid_mutual_info": metrics.get("valid/mutual_info"),
            "valid_decode_distinct": metrics.get("valid/decode_distinct"),
            "valid_decode_f1_gain": metrics.get("valid/decode_f1_gain"), "collapsed": bool(metrics.get("collapsed")),
            "checkpoint_path": metrics.get("checkpoint_path"),
            "params": {d.name: result.config[d.name] for d in dims if d.name in (result.config or {})},
            "error": root_cause(result.error) if result.error is not None else "",
        })
    return sorted(rows, key=lambda row: row["trial"])


def best_row(rows: list[dict]) -> dict | None:
    usable = [r for r in rows if r["objective"] is not None and r["checkpoint_path"]]
    return min(usable, key=lambda r: r["objective"]) if usable else None


def end_trial_runs(tracking_uri: str, experiment_id: str, sweep: str, rows: list[dict],
                   storage: str | None) -> None:
    """End each trial's MLflow run as `seqlvm train` ends its run (`TrackedRun`): the metrics its last checkpoint
    holds undelivered, its learning curves, its outcome, and FINISHED, or FAILED with the trial's error. Attaches
    each run's id to its row."""
    client = tracking.client(tracking_uri)
    runs = client.search_runs([experiment_id], f"tags.`seqlvm.sweep` = '{sweep}'")
    by_trial = {r.data.tags.get("seqlvm.trial_id"): r for r in runs}
    for row in rows:
        found = by_trial.get(row["trial"])
        row["run_id"] = found.info.run_id if found else None
        if found is None:
            continue
        run = TrackedRun(tracking_uri, found.info.run_id, found.info.run_name)
        if row["checkpoint_path"]:
            run.deliver_pending(local_copy(row["checkpoint_path"], storage))
        run.close(failure=row["error"] or None, tags={"seqlvm.outcome": row["outcome"]})


def table_csv(rows: list[dict]) -> str:
    names = sorted({k for r in rows for k in r["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    measures = ["objective", "valid_nll_bound", "valid_kl", "valid_mutual_info", "valid_decode_distinct",
                "valid_decode_f1_gain", "collapsed"]
    writer.writerow(["trial", "outcome", "step", *measures, *names, "error"])
    for r in rows:
        writer.writerow([r["trial"], r["outcome"], r["step"], *[r[m] for m in measures],
                         *[r["params"].get(n, "") for n in names], r["error"]])
    return buffer.getvalue()


def parameter_importances(rows: list[dict], dims: list[Dimension]) -> dict[str, float]:
    """Optuna's importance of each sampled dimension for the objective (its default evaluator); empty below
    3 scored trials, where it means nothing."""
    import warnings

    import optuna

    scored = [r for r in rows if r["objective"] is not None]
    if len(scored) < 3:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {d.name: d.distribution() for d in dims if d.kind != "fixed"}
    study = optuna.create_study()
    for row in scored:
        params = {k: v for k, v in row["params"].items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=row["objective"]))
    try:
        with warnings.catch_warnings():  # "few trials in some regimes": true of every small sweep
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. no dimension shared by every trial
        return {}


def objective_axis(rows: list[dict]) -> tuple[float, float] | None:
    """The y-range of the objective figure: the scored trials the collapse guard accepted, with a margin. A
    rejected trial's objective carries COLLAPSE_PENALTY, which would squash every other trial into one line. With
    none accepted, the rejected trials' bounds. None without a scored trial."""
    scored = [r for r in rows if r["objective"] is not None]
    values = [r["objective"] for r in scored if not r.get("collapsed")] or [_bound(r) for r in scored]
    if not values:
        return None
    low, high = min(values), max(values)
    margin = 0.08 * (high - low) or max(1.0, 0.02 * abs(high))
    return low - margin, high + margin


def _bound(row: dict) -> float:
    """A rejected trial's validation NLL bound: its objective without the penalty."""
    bound = row.get("valid_nll_bound")
    return bound if bound is not None else row["objective"] - COLLAPSE_PENALTY


def draw_objective(ax, rows: list[dict]) -> None:
    """The objective by trial, on the scale of the trials the collapse guard accepted (`objective_axis`), with the
    best so far among them; the rejected ones on the top edge."""
    from matplotlib.ticker import MaxNLocator

    numbered = [(i + 1, r) for i, r in enumerate(rows) if r["objective"] is not None]
    accepted = [(x, r) for x, r in numbered if not r.get("collapsed")]
    rejected = [(x, r) for x, r in numbered if r.get("collapsed")]
    axis = objective_axis(rows)
    if accepted:
        xs, ys = [x for x, _ in accepted], [r["objective"] for _, r in accepted]
        ax.scatter(xs, ys, c=["tab:blue" if r["outcome"] == "finished" else "tab:gray" for _, r in accepted],
                   label="trial (grey: stopped early)")
        ax.step(xs, [min(ys[:i + 1]) for i in range(len(ys))], where="post", color="tab:red", label="best so far")
    if rejected:  # unclipped, so that a marker on the edge shows whole
        ys = [axis[1] if accepted else _bound(r) for _, r in rejected]
        ax.scatter([x for x, _ in rejected], ys, marker="x", color="tab:orange", clip_on=False,
                   label="rejected by the collapse guard" + (" (top edge)" if accepted else " (NLL bound)"))
    if axis:
        ax.set_ylim(*axis)
    ax.set(xlabel="trial", ylabel="objective (valid NLL bound)", title="Sweep objective by trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if numbered:
        ax.legend()


def _figures(rows: list[dict], importances: dict[str, float], folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_objective(ax, rows)
    fig.tight_layout()
    paths.append(folder / "objective_by_trial.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if importances:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(importances) + 1.2))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:green")
        ax.set(xlabel="importance (Optuna)", title="Which hyperparameters mattered")
        fig.tight_layout()
        paths.append(folder / "parameter_importance.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def log_to_parent(tracking_uri: str, parent_run_id: str, rows: list[dict], dims: list[Dimension]) -> None:
    client = tracking.client(tracking_uri)
    logger = tracking.MetricLogger(tracking_uri, parent_run_id)
    best = math.inf
    for i, row in enumerate(rows, start=1):
        if row["objective"] is not None:
            best = min(best, row["objective"])
            logger.log({"trial/objective": row["objective"], "trial/best_so_far": best}, step=i)
    logger.log({"trials/total": len(rows), "trials/finished": sum(r["outcome"] == "finished" for r in rows),
                "trials/stopped_early": sum(r["outcome"] == "stopped early" for r in rows),
                "trials/errors": sum(r["outcome"] == "error" for r in rows)}, step=0)
    client.log_text(parent_run_id, table_csv(rows), "trials.csv")
    with tempfile.TemporaryDirectory() as tmp:
        for path in _figures(rows, parameter_importances(rows, dims), Path(tmp)):
            client.log_artifact(parent_run_id, str(path), artifact_path="figures")
