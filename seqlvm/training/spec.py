"""The run specification: what a run trains (a model by name with its config, and the training settings), built
once from a YAML file and `key=value` overrides, checked, passed whole to the workers, stored in every checkpoint
(`to_dict`) and varied by sweeps with structured values (`with_values`).

A config file has two sections, `model:` (fields of the chosen model's config) and `train:` (TrainConfig), plus an
optional top-level `model_name:` and a `tune:` section for sweeps. Overrides use dotted keys (`model.latent_dim=32`,
`train.lr=0.01`); a bare key is accepted when exactly one section has it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import SeqlvmError
from seqlvm.models import model_class
from seqlvm.models.fields import Range, bounded, count, non_negative, positive, size, validate_config


KL_SCHEDULES = ("sigmoid", "linear", "cyclical", "constant")
MIN_TOKEN_BUDGET = 2


@dataclass
class TrainConfig:
    batch_size: int = size(32)
    epochs: int = size(10)
    max_steps: int | None = size(None)
    optimizer: str = "adam"  # adam | sgd
    lr: float = positive(1e-3)
    grad_clip: float = positive(5.0)
    weight_decay: float = non_negative(0.0)
    # KL cost annealing: sigmoid (Bowman et al. Fig. 2), linear warm-up (Kruengkrai), cyclical (Fu et al.), or
    # constant.
    kl_anneal: str = "sigmoid"
    kl_anneal_rate: float = positive(0.0025)
    kl_anneal_midpoint: int = count(2500)
    kl_warmup_steps: int = count(2000)
    kl_cycle_steps: int = size(1000)
    # the share of each cycle over which the weight rises
    kl_cycle_rise: float = bounded(0.5, Range(0.0, 1.0, low_open=True))
    kl_weight: float = non_negative(1.0)  # the weight for `constant`, and the ceiling of the other schedules
    # Data streaming
    bucket_factor: int = size(20)  # sort windows of bucket_factor*batch_size sentences by length; 1 = no bucketing
    # Token-budget batches: as many sequences as keep (sequences) x (longest padded length) within this, instead of
    # batch_size sequences (pipelines/epochs.py). None = batch_size sequences.
    max_tokens: int | None = size(None)
    batch_log: bool = False  # each worker appends its batches' (shard, row) ids, one JSON line a step (docs/data.md)
    # Evaluation and checkpoints
    eval_every: int = size(200)
    log_every: int = size(20)
    eval_batches: int | None = size(None)  # cap on validation batches per worker (None = whole split)
    final_iw_samples: int = size(50)  # importance samples for the test-set NLL logged at the end of training
    keep_checkpoints: int = size(3)
    seed: int = 0
    use_gpu: bool = False
    mixed_precision: str = "auto"  # auto (bf16 on a CPU with native bf16) | none | bf16 | fp16 (GPU only)
    # The collapse guard (seqlvm.evaluation.CollapseGuard, set by sweeps): validation KL, mutual information (nats),
    # active units, share of distinct posterior decodes and their F1 gain over other inputs, below which the
    # reported objective is penalised as collapsed; 0 checks nothing.
    min_kl: float = non_negative(0.0)
    min_mutual_info: float = non_negative(0.0)
    min_active_units: int = count(0)
    min_decode_distinct: float = bounded(0.0, Range(0.0, 1.0))
    min_decode_f1_gain: float = bounded(0.0, Range(0.0, 1.0))

    def validate(self) -> None:
        if self.kl_anneal not in KL_SCHEDULES:
            raise SeqlvmError(f"train.kl_anneal must be one of {', '.join(KL_SCHEDULES)}, not {self.kl_anneal!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise SeqlvmError(f"train.optimizer must be adam or sgd, not {self.optimizer!r}")
        if self.mixed_precision not in ("auto", "none", "bf16", "fp16"):
            raise SeqlvmError(f"train.mixed_precision must be auto, none, bf16 or fp16, not {self.mixed_precision!r}")
        if self.max_tokens is not None and self.max_tokens < MIN_TOKEN_BUDGET:
            raise SeqlvmError(f"train.max_tokens must be at least {MIN_TOKEN_BUDGET} (one word and its </s>), "
                              f"not {self.max_tokens}")


# `tune:` holds a sweep's search space and objective (read by tune/space.py, ignored by training).
TOP_LEVEL_KEYS = ("model_name", "model", "train", "tune")


def _coerce(value: str) -> Any:
    """Parse an override's value as YAML so `lr=1e-3`, `average_hidden=true` and `max_steps=null` work."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:  # not YAML: the text itself, which the field's type check then judges
        return value
    return value if parsed is None and value.lower() not in ("null", "none", "~") else parsed


def _field_types(cls) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_value(section: str, key: str, value: Any, default: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SeqlvmError(f"{source}: {section}.{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot in the mantissa) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, (int, float)) and not isinstance(value, bool) and isinstance(value, (int, float)):
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise SeqlvmError(f"{source}: {section}.{key} must be an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    raise SeqlvmError(f"{source}: {section}.{key} has the wrong type ({value!r}, expected like {default!r})")


def load_config_file(config_file: str | Path | None) -> dict[str, Any]:
    """The raw mapping of a config file (empty without one), checked for its top-level keys."""
    if not config_file:
        return {}
    path = Path(config_file)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SeqlvmError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SeqlvmError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SeqlvmError(f"{path}: a config file must be a mapping with `model:` and `train:` sections")
    unknown = set(raw) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise SeqlvmError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(TOP_LEVEL_KEYS)})")
    return raw


def _sections(model_cls) -> dict[str, dict[str, dataclasses.Field]]:
    return {"model": _field_types(model_cls.config_class), "train": _field_types(TrainConfig)}


def _section_of(key: str, sections: dict, item: str) -> tuple[str, str]:
    """(section, field) of a dotted or bare override key."""
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections or name not in sections[section]:
            raise SeqlvmError(f"unknown config key '{section}.{name}' in override {item!r}")
        return section, name
    owners = [s for s, known in sections.items() if key in known]
    if len(owners) != 1:
        problem = "unknown config key" if not owners else "ambiguous key (prefix it with model. or train.)"
        raise SeqlvmError(f"{problem} '{key}' in override {item!r}")
    return owners[0], key


def keys_set_by(config_file: str | Path | None, overrides: list[str], model_name: str) -> set[str]:
    """The `section.key`s that a config file's `model:` and `train:` sections and `key=value` overrides set."""
    raw = load_config_file(config_file)
    sections = _sections(model_class(model_name))
    keys = {f"{section}.{key}" for section in sections for key in (raw.get(section) or {})}
    for item in overrides:
        keys.add(".".join(_section_of(item.split("=", 1)[0], sections, item)))
    return keys


@dataclass
class RunSpec:
    model_name: str
    model: Any  # the model's config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def build(cls, config_file: str | Path | None = None, overrides: list[str] = (), model_name: str | None = None,
              default_model: str = "sentence-vae", model_defaults: dict | None = None) -> "RunSpec":
        """From a YAML file and `key=value` overrides. `model_defaults` are model fields set by the data (a frame
        model's output distribution): the file and the overrides still win, and fields the model lacks are
        ignored."""
        raw = load_config_file(config_file)
        source = str(config_file) if config_file else "overrides"
        name = model_name or raw.get("model_name") or default_model
        sections = _sections(model_class(name))
        for section in sections:
            if not isinstance(raw.get(section) or {}, dict):
                raise SeqlvmError(f"{source}: `{section}:` must be a mapping of keys to values")
        data_defaults = {k: v for k, v in (model_defaults or {}).items() if k in sections["model"]}
        values = {"model": {**data_defaults, **(raw.get("model") or {})}, "train": dict(raw.get("train") or {})}
        for section, known in sections.items():
            for key in values[section]:
                if key not in known:
                    raise SeqlvmError(f"{source}: unknown config key '{section}.{key}'")
        for item in overrides:
            if "=" not in item:
                raise SeqlvmError(f"override {item!r} is not of the form key=value")
            key, value = item.split("=", 1)
            section, key = _section_of(key, sections, item)
            values[section][key] = _coerce(value)
        return cls._checked(name, values["model"], values["train"], source)

    @classmethod
    def _checked(cls, name: str, model: dict, train: dict, source: str) -> "RunSpec":
        config_class = model_class(name).config_class
        defaults_model, defaults_train = config_class(), TrainConfig()
        model_config = config_class(**{k: _check_value("model", k, v, getattr(defaults_model, k), source)
                                       for k, v in model.items()})
        train_config = TrainConfig(**{k: _check_value("train", k, v, getattr(defaults_train, k), source)
                                      for k, v in train.items()})
        try:
            validate_config(model_config, "model")
            validate_config(train_config, "train")
        except SeqlvmError as exc:
            raise SeqlvmError(f"{source}: {exc}") from None
        return cls(name, model_config, train_config)

    def build_model(self, input_size: int):
        """The model this spec describes, for data of `input_size` (a vocabulary's size or a frame size)."""
        return model_class(self.model_name)(self.model, input_size)

    def with_values(self, values: dict[str, Any], source: str = "values") -> "RunSpec":
        """This spec with some fields set (`{"train.lr": 0.01, "model.latent_dim": 8}`), checked like a file."""
        sections = _sections(model_class(self.model_name))
        changed = {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}
        for key, value in values.items():
            try:
                section, name = _section_of(key, sections, f"{key}={value!r}")
            except SeqlvmError as exc:
                raise SeqlvmError(f"{source}: {exc}") from None
            changed[section][name] = value
        return self._checked(self.model_name, changed["model"], changed["train"], source)

    def value(self, key: str) -> Any:
        """The value of a `section.key`."""
        section, name = key.split(".", 1)
        return getattr(self.model if section == "model" else self.train, name)

    def to_dict(self) -> dict:
        """Plain data, as checkpoints store it (`config`) and MLflow logs it (flattened)."""
        return {"model_name": self.model_name, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        return cls._checked(data["model_name"], data["model"], data["train"], "checkpoint")
