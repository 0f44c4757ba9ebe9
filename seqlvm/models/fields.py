"""Config fields that carry their allowed range: sizes, counts, rates. Every model's config and the training config
declare them, and `check_ranges` refuses a value outside its range in one line naming the dotted key, so a bad
size never reaches PyTorch (whose own wording names neither the key nor the range)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pipelines.errors import SeqlvmError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is outside
    high_open: bool = False
    integer: bool = False

    def admits(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        kind = "integer" if self.integer else "number"
        if self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a {kind} in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.low == 0 and self.low_open or self.integer and self.low == 1:
            return f"a positive {kind}"
        return f"{'an' if self.integer else 'a'} {kind} {'>' if self.low_open else '>='} {self.low:g}"


def bounded(default, allowed: Range):
    return dataclasses.field(default=default, metadata={"range": allowed})


def size(default):
    """Units, dimensions, layers, samples: a positive integer."""
    return bounded(default, Range(1, integer=True))


def count(default):
    """Steps or units that may be none: an integer >= 0."""
    return bounded(default, Range(0, integer=True))


def rate(default):
    """A share or a probability: a number in [0, 1]."""
    return bounded(default, Range(0.0, 1.0))


def positive(default):
    return bounded(default, Range(0.0, low_open=True))


def non_negative(default):
    return bounded(default, Range(0.0))


def check_ranges(config, section: str) -> None:
    """A one-line error for the first field of a config dataclass outside its declared range (None, where a field
    allows it, means "not set" and is not checked)."""
    for field in dataclasses.fields(config):
        allowed = field.metadata.get("range")
        value = getattr(config, field.name)
        if allowed is not None and value is not None and not allowed.admits(value):
            raise SeqlvmError(f"{section}.{field.name}: {value!r} is not {allowed.describe()}")


def validate_config(config, section: str) -> None:
    """Every check of a config: its fields' ranges, then its own `validate()` (choices, fields that must agree)."""
    check_ranges(config, section)
    if hasattr(config, "validate"):
        config.validate()
