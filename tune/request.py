"""What `seqlvm tune` is asked to do, and what a sweep returns."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.shards import absolute_location
from seqlvm.tracking import registry
from seqlvm.training import TrainRequest


@dataclass
class SweepRequest(TrainRequest):
    """What `seqlvm train` takes (shared by every trial), plus the sweep's own settings."""
    num_samples: int = 8
    search: str = "tpe"
    scheduler: str = "asha"
    max_concurrent: int | None = None
    startup_trials: int | None = None
    # The collapse guard's minimums; None: the config's `tune:` value, else the default for the model.
    min_kl: float | None = None
    min_mutual_info: float | None = None
    min_active_units: int | None = None
    min_decode_distinct: float | None = None
    min_decode_f1_gain: float | None = None
    allow_collapsed: bool = False  # no guard: any trial may win
    seed: int = 0
    iw_samples: int = 20
    registered_name: str | None = None
    register: bool = True

    def train_request(self) -> TrainRequest:
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainRequest)}
        return TrainRequest(**{**shared, "data_dir": absolute_location(self.data_dir),
                               "overrides": list(self.overrides)})


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    tracking_uri: str
    rows: list[dict]
    best: dict | None
    registered_name: str | None = None
    version: str | None = None
    decision: registry.PromotionDecision | None = None
    test_metrics: dict | None = None  # the registered version's evaluation on the test split

