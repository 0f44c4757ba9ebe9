"""A sweep's search space: dimensions over config keys, read from a config file's `tune.space` section or
taken from defaults that ask the papers' questions (annealing, dropout, sample counts, sizes).

File form (each value one of these; `when` makes a dimension conditional on an earlier one):

    tune:
      min_kl: 1.0
      space:
        train.kl_anneal: {choice: [sigmoid, linear]}
        train.kl_anneal_rate: {loguniform: [0.01, 0.05], when: {train.kl_anneal: sigmoid}}
        model.latent_dim: {int: [8, 64], log: true}
        model.word_keep_rate: {uniform: [0.3, 1.0]}
        model.z_every_step: false          # a plain value: fixed for every trial
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import SeqlvmError

KINDS = ("choice", "uniform", "loguniform", "int")


@dataclass
class Dimension:
    name: str  # a config key, `model.X` or `train.X`
    kind: str  # choice | uniform | loguniform | int | fixed
    low: float | None = None
    high: float | None = None
    choices: list = field(default_factory=list)
    log: bool = False
    when: dict[str, list] = field(default_factory=dict)  # active only if each named dimension took one of these

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(name in chosen and chosen[name] in values for name, values in self.when.items())

    def suggest(self, trial) -> Any:
        """Draw this dimension's value from an Optuna trial."""
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")

    def distribution(self):
        """The Optuna distribution (for parameter importances); None for a fixed value."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
        if self.kind == "fixed":
            return None
        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def extremes(self) -> list[Any]:
        """The values a trial can take at either end: every choice, or the range's bounds."""
        if self.kind in ("choice", "fixed"):
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


class SpaceSampler:
    """Optuna define-by-run function for Ray's OptunaSearch. A plain class (not a closure) because the searcher
    pickles it into the sweep's state for `--resume`."""

    def __init__(self, dimensions: list[Dimension]):
        self.dimensions = dimensions

    def __call__(self, trial) -> dict[str, Any] | None:
        chosen: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.active(chosen):
                chosen[dim.name] = dim.suggest(trial)
        # Suggested values are captured by OptunaSearch; fixed ones must be returned.
        return {d.name: chosen[d.name] for d in self.dimensions if d.kind == "fixed" and d.name in chosen} or None

    def propose(self, trial) -> dict[str, Any]:
        """Every value of a configuration, suggested and fixed, for callers that drive Optuna themselves."""
        fixed = self(trial) or {}  # suggesting fills trial.params, so call before reading them
        return {**trial.params, **fixed}


def parse_dimension(name: str, spec: Any, source: str) -> Dimension:
    if not isinstance(spec, dict):
        return Dimension(name, "fixed", choices=[spec])
    kinds = [k for k in KINDS if k in spec]
    unknown = set(spec) - set(KINDS) - {"log", "when"}
    if len(kinds) != 1 or unknown:
        raise SeqlvmError(f"{source}: tune.space.{name} needs exactly one of {', '.join(KINDS)} "
                          "(plus optional log, when)")
    kind, values = kinds[0], spec[kinds[0]]
    when = {key: value if isinstance(value, list) else [value] for key, value in (spec.get("when") or {}).items()}
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise SeqlvmError(f"{source}: tune.space.{name}.choice must be a non-empty list")
        return Dimension(name, kind, choices=list(values), when=when)
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        raise SeqlvmError(f"{source}: tune.space.{name}.{kind} must be [low, high]") from None
    if not low < high or (kind == "loguniform" or spec.get("log")) and low <= 0:
        raise SeqlvmError(f"{source}: tune.space.{name}.{kind} needs low < high (and low > 0 on a log scale)")
    return Dimension(name, kind, low, high, log=bool(spec.get("log")), when=when)


def parse_space(section: dict, source: str) -> list[Dimension]:
    dimensions: list[Dimension] = []
    for name, spec in section.items():
        dim = parse_dimension(str(name), spec, source)
        earlier = {d.name for d in dimensions}
        missing = set(dim.when) - earlier
        if missing:
            raise SeqlvmError(f"{source}: tune.space.{name} is conditional on {sorted(missing)[0]}, "
                              "which must be a dimension listed before it")
        dimensions.append(dim)
    return dimensions


def default_space(model_fields: set[str], max_steps: int, has_latent: bool = True) -> list[Dimension]:
    """The questions the papers asked, scaled to the sweep's training length; keys the model lacks are dropped,
    and the annealing keys too when it has no latent.

    Annealing kind and shape (Bowman's sigmoid: rate and midpoint; Kruengkrai's linear warm-up; Fu et al.'s
    cycles, 2-4 of them), free bits and the bag-of-words loss, word dropout and decoder dropouts, latent
    samples with or without hidden-state averaging, and the sizes Bowman's Table 11 tuned. Sigmoid rates are
    drawn so the curve rises over 5-40% of training. For the frame models: VRNN's conditional prior against
    VRNN-I, SRNN's smoothing against filtering and its Resq parameterisation. The deep state-space model's flow
    and importance samples K (Schmidt & Hofmann, Table 1), the hybrid VAE's auxiliary weight alpha and history
    dropout (Semeniuta et al.), NASMC's particle count.
    """
    steps = max(10, max_steps)
    sigmoid, linear = {"train.kl_anneal": ["sigmoid"]}, {"train.kl_anneal": ["linear"]}
    cyclical = {"train.kl_anneal": ["cyclical"]}
    dims = [
        Dimension("train.kl_anneal", "choice", choices=["sigmoid", "linear", "cyclical", "constant"]),
        Dimension("train.kl_anneal_rate", "loguniform", 10.0 / steps, 80.0 / steps, when=sigmoid),
        Dimension("train.kl_anneal_midpoint", "int", round(0.2 * steps), round(0.7 * steps), when=sigmoid),
        Dimension("train.kl_warmup_steps", "int", round(0.1 * steps), round(0.8 * steps), when=linear),
        Dimension("train.kl_cycle_steps", "int", round(0.25 * steps), round(0.5 * steps), when=cyclical),
        Dimension("model.free_bits", "uniform", 0.0, 1.0),
        Dimension("model.bow_weight", "choice", choices=[0.0, 1.0]),
        Dimension("train.lr", "loguniform", 3e-4, 3e-3),
        Dimension("model.word_keep_rate", "uniform", 0.0, 1.0),
        Dimension("model.embedding_dropout", "uniform", 0.0, 0.5),
        Dimension("model.hidden_dropout", "uniform", 0.0, 0.5),
        Dimension("model.latent_samples", "int", 1, 3),
        Dimension("model.average_hidden", "choice", choices=[False, True]),
        Dimension("model.latent_dim", "int", 8, 64, log=True),
        Dimension("model.hidden_dim", "int", 64, 384, log=True),
        Dimension("model.embedding_dim", "int", 64, 384, log=True),
        Dimension("model.feature_dim", "int", 64, 384, log=True),
        Dimension("model.conditional_prior", "choice", choices=[True, False]),
        Dimension("model.smoothing", "choice", choices=[True, False]),
        Dimension("model.resq", "choice", choices=[True, False]),
        Dimension("model.generative_flow", "choice", choices=["tril", "2xtril", "diag"]),
        Dimension("model.importance_samples", "int", 1, 10, log=True),
        Dimension("model.aux_weight", "loguniform", 0.05, 1.0),
        Dimension("model.history_keep_rate", "uniform", 0.5, 1.0),
        Dimension("model.particles", "int", 4, 32, log=True),
    ]
    section = {d.name: d.name.split(".", 1) for d in dims}
    return [d for d in dims if (section[d.name][0] == "train" and (has_latent or "kl_" not in d.name))
            or section[d.name][1] in model_fields]


def leaving_alone(dims: list[Dimension], fixed: dict[str, Any]) -> list[Dimension]:
    """The dimensions without those of the keys in `fixed` (values the user set): a dimension conditional on one of
    them is kept, unconditionally, where the set value meets its condition, and dropped where it does not."""
    kept = []
    for dim in dims:
        if dim.name in fixed:
            continue
        if any(name in fixed and fixed[name] not in values for name, values in dim.when.items()):
            continue
        kept.append(Dimension(dim.name, dim.kind, dim.low, dim.high, dim.choices, dim.log,
                              {name: values for name, values in dim.when.items() if name not in fixed}))
    return kept
