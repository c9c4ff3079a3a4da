"""Constraints, the soft penalty and the reward (the EPNAS paper's Eq. 1-3, made explicit).

Maximise P(m) subject to ``L_i <= U_i(m) <= H_i`` for each constraint ``i`` on a cost
metric (``params``, ``flops``, ``intensity``, ``memory``, ``latency``, ...).

* relative violation: ``v_i = max(0, (U_i - H_i) / H_i, (L_i - U_i) / L_i)`` (a missing
  bound contributes nothing);
* soft violation (Eq. 2): ``V_i = p_i ** v_i`` with base penalty ``p_i`` (default 0.9);
* reward (Eq. 3): ``R(m) = P(m) * prod_i V_i``, where P is the accuracy as a fraction;
* a model is feasible when every ``v_i == 0``. A failed trial, or one whose accuracy is
  not a number, has reward 0 and is infeasible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from epnas.errors import EpnasError
from epnas.trial import Result

DEFAULT_PENALTY = 0.9
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_size(text: str | float | int) -> float:
    """``100k`` -> 1e5, ``2.5M`` -> 2.5e6, ``2GB`` -> 2e9; plain numbers pass through."""
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)b?\s*", text, re.I)
    if not match:
        raise EpnasError(f"cannot read size {text!r}: use a number with an optional "
                         "k/M/G suffix, e.g. 100k or 2.5M")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


@dataclass(frozen=True)
class Constraint:
    """``low <= metrics[metric] <= high`` with a soft penalty base."""

    metric: str
    low: float | None = None
    high: float | None = None
    penalty: float = DEFAULT_PENALTY

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise EpnasError(f"constraint on {self.metric!r} needs a lower or an upper bound")
        for bound in (self.low, self.high):
            if bound is not None and bound <= 0:
                raise EpnasError(f"constraint on {self.metric!r}: bounds must be positive "
                                 "(the violation is relative to them)")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise EpnasError(f"constraint on {self.metric!r}: lower bound {self.low:g} is "
                             f"above upper bound {self.high:g}")
        if not 0 < self.penalty < 1:
            raise EpnasError(f"constraint on {self.metric!r}: penalty must be in (0, 1)")

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """``METRIC:LOW:HIGH[:PENALTY]``; an empty bound means none (``params::100k``)."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[0]:
            raise EpnasError(f"constraint {text!r}: expected METRIC:LOW:HIGH[:PENALTY], "
                             "e.g. params::100k or flops:1M:20M:0.8")
        low = parse_size(parts[1]) if parts[1] else None
        high = parse_size(parts[2]) if parts[2] else None
        penalty = DEFAULT_PENALTY
        if len(parts) == 4 and parts[3]:
            try:
                penalty = float(parts[3])
            except ValueError:
                raise EpnasError(f"constraint {text!r}: penalty {parts[3]!r} must be a number "
                                 "in (0, 1)") from None
        return cls(parts[0], low, high, penalty)

    def violation(self, value: float) -> float:
        """The relative violation ``v_i`` (0 when satisfied)."""
        v = 0.0
        if self.high is not None:
            v = max(v, (value - self.high) / self.high)
        if self.low is not None:
            v = max(v, (self.low - value) / self.low)
        return v

    def __str__(self) -> str:
        low = "" if self.low is None else _exact(self.low)
        high = "" if self.high is None else _exact(self.high)
        return f"{self.metric}:{low}:{high}:{_exact(self.penalty)}"


def _exact(value: float) -> str:
    """The shortest text that reads back as ``value`` (``:g`` keeps 6 digits: a study
    recording ``flops::2432123`` as ``2.43212e+06`` moved the bound)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Objective:
    """The searched metric (``accuracy``) under soft constraints."""

    constraints: tuple[Constraint, ...] = ()
    metric: str = "accuracy"

    @classmethod
    def of(cls, constraints: Iterable[Constraint | str]) -> Objective:
        return cls(tuple(c if isinstance(c, Constraint) else Constraint.parse(c)
                         for c in constraints))

    def violations(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """``v_i`` per constrained metric; a metric the result lacks is an error."""
        out = {}
        for c in self.constraints:
            if c.metric not in metrics:
                raise EpnasError(f"constraint on {c.metric!r}, but the evaluator reports only "
                                 f"{sorted(metrics)}")
            out[c.metric] = max(out.get(c.metric, 0.0), c.violation(float(metrics[c.metric])))
        return out

    def reward(self, metrics: Mapping[str, float]) -> float:
        """``P * prod_i p_i ** v_i`` (Eq. 3)."""
        performance = float(metrics.get(self.metric, 0.0))
        if math.isnan(performance):
            return 0.0
        factor = 1.0
        for c in self.constraints:
            factor *= c.penalty ** c.violation(float(metrics[c.metric]))
        return performance * factor

    def feasible(self, metrics: Mapping[str, float]) -> bool:
        return all(v == 0 for v in self.violations(metrics).values())

    def score(self, result: Result) -> Result:
        """``result`` with ``reward`` and ``feasible`` filled in."""
        if not result.ok or math.isnan(float(result.metrics.get(self.metric, math.nan))):
            return result.scored(0.0, False)
        self.violations(result.metrics)  # a missing metric is reported clearly
        return result.scored(self.reward(result.metrics), self.feasible(result.metrics))
