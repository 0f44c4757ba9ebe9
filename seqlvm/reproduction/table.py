"""What a reproduction is made of: a paper's table (`PaperTable`), its rows of work (`Row`, one Tune trial each),
the lines a row adds to the table (`Line`: our value beside the paper's, and whether they compare), and the
trends a table is checked for (`Check`)."""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BUDGETS = ("quick", "paper")
# Every table, by the name the command line takes and in the order they print; each is the module
# `tables/<name, - as _>.py`, loaded only when a reproduction runs (the command line's help needs the names alone).
TABLE_NAMES = ("music", "collapse", "avg", "words", "hybrid", "nasmc-ssm", "nvdm")


@dataclass(frozen=True)
class DataFile:
    """The data a row reads: its name as printed, its path, and a fingerprint of its bytes (or of the prepared
    corpus, for a built-in one) that says whether two runs read the same data."""
    name: str
    path: str
    fingerprint: str

    @classmethod
    def of_file(cls, path: str | Path, name: str | None = None) -> "DataFile":
        path = Path(path)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return cls(name or path.name, str(path.absolute()), digest.hexdigest()[:12])


@dataclass(frozen=True)
class Row:
    """One unit of a table's work: a model (or a comparison) trained and measured, run as one Tune trial.
    `settings` holds everything its table's runner needs (plain JSON values), sized by the budget. `gpus` is set by
    the driver: one when the cluster has GPUs."""
    table: str
    name: str
    settings: dict
    data: DataFile | None = None
    cpus: float = 1.0
    gpus: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Row":
        data = values.get("data")
        return cls(**{**values, "data": DataFile(**data) if data else None})


@dataclass(frozen=True)
class Line:
    """One line of a published table: our value of a metric beside the paper's (None where the paper has none),
    whether the two compare (the same data files and the same metric), and on what basis."""
    label: str
    metric: str
    ours: float | None
    paper: float | None
    comparable: bool
    basis: str


@dataclass(frozen=True)
class RowOutcome:
    """What a row's trial produced: its lines, or the one-line reason it failed; with the optimiser steps it took
    and its wall time."""
    row: Row
    lines: tuple[Line, ...] = ()
    steps: int = 0
    seconds: float = 0.0
    failure: str | None = None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "row": self.row.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> "RowOutcome":
        return cls(row=Row.from_dict(values["row"]), lines=tuple(Line(**line) for line in values["lines"]),
                   steps=values["steps"], seconds=values["seconds"], failure=values["failure"])


@dataclass(frozen=True)
class Check:
    """A trend the paper reports, checked on our lines: its claim, whether it holds, and the values behind it."""
    claim: str
    holds: bool
    detail: str


@dataclass
class RowRun:
    """What a row's runner gets besides its row: the budget, where prepared data lives, `log(step, metrics)`, which
    sends progress to the row's MLflow run, and the device `fit` trains on (cuda when the row holds a GPU)."""
    budget: str
    data_dir: Path
    log: Callable[[int, dict], None] = field(default=lambda step, metrics: None)
    device: str = "cpu"
    steps: int = 0  # optimiser steps taken, set by the runner


@dataclass(frozen=True)
class PaperTable:
    """One of the papers' comparisons.
    - `rows(budget, data_root, data_dir)`: its rows for a budget and the data found (`data_root`, the user's folder
      of the papers' files, or None); it prepares what they read under `data_dir`, in the driver, before Ray starts.
    - `run(row, work)`: one row's training and measurement, in a Ray worker; its lines.
    - `checks(lines)`: the paper's trends, checked on every row's lines.
    `paper_cost` says what `--budget paper` is expected to take."""
    key: str
    paper: str
    title: str
    rows: Callable[[str, Path | None, Path], list[Row]]
    run: Callable[[Row, RowRun], list[Line]]
    checks: Callable[[list[Line]], list[Check]]
    paper_cost: str = ""


def value(lines: list[Line], label: str, metric: str) -> float | None:
    """Our value of `metric` on the line labelled `label`, or None where that row failed or did not report it."""
    return next((line.ours for line in lines if line.label == label and line.metric == metric), None)


def trend(claim: str, values: dict[str, float | None], holds: Callable[..., bool]) -> Check:
    """A Check of `holds(*values)`; one that cannot be told (a row failed) does not hold."""
    detail = ", ".join(f"{name} {'-' if v is None else f'{v:.3f}'}" for name, v in values.items())
    told = all(v is not None for v in values.values())
    return Check(claim, told and bool(holds(*values.values())), detail if told else f"{detail} (a row is missing)")
