"""The allowed ranges of numeric settings, checked in one place for the API and the CLI.

A threshold of 7 or a p of 1.5 is not an error anywhere downstream: it silently selects nothing.
Each setting names its range here; `Range.check` turns a value outside it into one line naming the
setting and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kneuron.errors import KneuronError


def _number(x) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else f"{x}"


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "any finite number"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, name: str, value):
        """`value` unchanged, or KneuronError("NAME must be in (0, 1], got 7.0"); None passes (not given)."""
        if value is None or self.contains(value):
            return value
        where = "in " if self.low is not None and self.high is not None else ""
        kind = "an integer " if self.integer else "a number " if not isinstance(value, (int, float)) else ""
        raise KneuronError(f"{name} must be {kind}{where}{self.describe()}, got {value!r}")


FRACTION = Range(0, 1, low_open=True)  # thresholds, p, shares: 0 would keep everything, > 1 nothing
POSITIVE = Range(1, integer=True)  # counts: steps, top-k, limits, workers, threads, prompts
NON_NEGATIVE = Range(0)  # factors and lambdas (0 switches off; negative flips the sign)
POSITIVE_REAL = Range(0, low_open=True)  # ratios and margins of a fitted edit
SEED = Range(0, 2**32 - 1, integer=True)  # numpy's generators refuse negative seeds
