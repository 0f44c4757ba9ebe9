"""How a sweep searches: the Optuna sampler behind --search, and ASHA's early stopping behind --scheduler."""
from __future__ import annotations

import warnings

from tune.space import Dimension, SpaceSampler

SEARCHES = ("tpe", "gp", "random")
SCHEDULERS = ("asha", "none")


def make_sampler(search: str, seed: int, startup_trials: int):
    """The Optuna sampler behind --search (also used by benchmarks/search_comparison.py)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search == "tpe":  # multivariate + group: dependent and conditional dimensions modelled jointly
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True, group=True)
    if search == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def default_startup_trials(num_samples: int) -> int:
    """Random trials before the Bayesian model takes over: a quarter of the budget, 2 to 10."""
    return max(2, min(10, num_samples // 4))


def build_search(dims: list[Dimension], search: str, seed: int, startup_trials: int):
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=SpaceSampler(dims), sampler=make_sampler(search, seed, startup_trials),
                        metric="objective", mode="min")


def build_scheduler(scheduler: str, max_steps: int, eval_every: int):
    if scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rungs at 1/4 and 1/2 of training: earlier ones would judge trials before their KL annealing has run.
    return ASHAScheduler(time_attr="step", max_t=max_steps, grace_period=max(eval_every, max_steps // 4),
                         reduction_factor=2)

