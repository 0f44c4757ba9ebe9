"""A sweep's progress as a person reads it: one line per trial evaluation (step, objective, KL, mutual information,
decodes, the trial's ETA) and one when the trial ends, printed by the sweep's driver as Tune receives results."""
from __future__ import annotations

import time

from ray.tune import Callback

from seqlvm.evaluation import COLLAPSE_PENALTY, CollapseGuard
from seqlvm.run_log import duration, tell


class TrialProgress(Callback):
    """Pickled with the sweep's state for --resume: it holds plain data and writes through `run_log.tell`."""

    def __init__(self, guard: CollapseGuard, max_steps: int):
        self.guard, self.max_steps = guard, max_steps
        self.started: dict[str, float] = {}
        self.last_step: dict[str, int] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "objective" not in result:
            return
        step = int(result.get("step", 0))
        self.last_step[trial.trial_id] = step
        tell(f"trial {trial.trial_id} {evaluation_line(result, self.guard, self.max_steps)}"
                 f"{self._eta(trial.trial_id, step)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        step = self.last_step.get(trial.trial_id, 0)
        ended = "finished" if step >= self.max_steps else f"stopped early by the scheduler at step {step}"
        tell(f"trial {trial.trial_id} {ended} after {self._took(trial.trial_id)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        tell(f"trial {trial.trial_id} failed after {self._took(trial.trial_id)} (its error is in the table "
                 "below and the sweep's log)")

    def _took(self, trial_id: str) -> str:
        return duration(time.time() - self.started.get(trial_id, time.time()))

    def _eta(self, trial_id: str, step: int) -> str:
        if not step or step >= self.max_steps or trial_id not in self.started:
            return ""
        elapsed = time.time() - self.started[trial_id]
        return f" | ETA {duration(elapsed / step * (self.max_steps - step))}"


def evaluation_line(result: dict, guard: CollapseGuard, max_steps: int) -> str:
    """`step 200/400 | objective 95.21 | KL 12.10 | MI 3.20 | decodes 64% distinct`; for a trial the guard rejects,
    its bound, the penalty and why in place of the objective."""
    measured = {k.removeprefix("valid/"): v for k, v in result.items() if k.startswith("valid/")}
    rejected = guard.collapse(measured)
    parts = [f"step {int(result.get('step', 0))}/{max_steps}",
             f"bound {measured['nll_bound']:.2f} + {COLLAPSE_PENALTY:g}, rejected" if rejected
             else f"objective {result['objective']:.2f}"]
    for key, label, fmt in (("kl", "KL", "{:.2f}"), ("mutual_info", "MI", "{:.2f}"),
                            ("decode_distinct", "decodes", "{:.0%} distinct")):
        if key in measured:
            parts.append(f"{label} {fmt.format(measured[key])}")
    if rejected:
        parts.append(rejected)
    return " | ".join(parts)
