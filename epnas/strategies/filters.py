"""Filters that wrap any strategy: EEEA-Net's early exit (Termritthikun et al., 2021).

EEEA-Net discards a candidate whose cost is above a threshold *before* training it
and draws another, so the search never spends an evaluation on a network it could
not use. :class:`EarlyExit` does that for any strategy: a rejected candidate goes back
to the wrapped strategy through :meth:`Strategy.discard` and the next one is asked;
it never reaches the evaluator or the store. How many were skipped is part of the
state (so it survives a resume) and the Study shows it.

Limits read ``max-METRIC=VALUE`` or ``min-METRIC=VALUE`` for any cost metric
(``params``, ``flops``, ``mflops``, ``bytes``, ``intensity``, ``memory``, and
``avg_flops`` where the evaluator's costs give it), with k/M/G suffixes:
``max-params=300k``, ``max-mflops=20``, ``min-intensity=8``.

``avg_flops`` (the mean FLOPs per input under early exit) is only measured by evaluating:
the ``supernet`` evaluator's costs give its lower bound (exit 0's cost), so a
``max-avg_flops`` limit rejects only networks that no exit thresholds bring under it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from epnas.errors import EpnasError
from epnas.objective import Objective, parse_size
from epnas.spaces.genome import Genome
from epnas.strategies.base import SearchContext, Strategy
from epnas.trial import Candidate, Result

COST_METRICS = ("params", "flops", "mflops", "bytes", "intensity", "memory", "avg_flops")
# the cost metrics a constraint may be on for ``+filter`` to turn it into limits
FILTERABLE = ("params", "flops", "bytes", "intensity", "memory", "avg_flops")
MAX_REJECTS = 10_000  # rejections in a row before the filter gives up

CostFunction = Callable[[Genome], Mapping[str, float]]


@dataclass(frozen=True)
class Limit:
    """One threshold: ``metric <= value`` (``upper``) or ``metric >= value``."""

    metric: str
    value: float
    upper: bool = True

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``max-params=300k`` or ``min-intensity=8``; raises :class:`EpnasError`."""
        match = re.fullmatch(r"\s*(max|min)[-_]([a-z_]+)\s*=\s*(\S+)\s*", text)
        if not match or match[2] not in COST_METRICS:
            raise EpnasError(f"filter {text!r}: expected max-METRIC=VALUE or min-METRIC=VALUE "
                             f"with METRIC one of {', '.join(COST_METRICS)} (e.g. "
                             "max-params=300k)")
        value = parse_size(match[3])
        return cls(match[2], value, match[1] == "max")

    def allows(self, costs: Mapping[str, float]) -> bool:
        metric = "flops" if self.metric == "mflops" else self.metric
        if metric not in costs:
            raise EpnasError(f"filter {self}: the evaluator's costs have no {metric!r} "
                             f"(they give {', '.join(costs)})")
        value = costs["flops"] / 1e6 if self.metric == "mflops" else costs[self.metric]
        return value <= self.value if self.upper else value >= self.value

    def __str__(self) -> str:
        return f"{'max' if self.upper else 'min'}-{self.metric}={self.value:g}"


class EarlyExit(Strategy):
    """Wraps a strategy; candidates outside the limits are replaced before evaluation.

    Args:
        strategy: the wrapped strategy (its options, seed and space are this one's).
        cost: the cost metrics of a genome, as the evaluator would report them.
        limits: :class:`Limit` objects or their ``max-params=300k`` strings.

    Attributes:
        skipped: candidates rejected so far (restored by :meth:`load_state_dict`).
    """

    def __init__(self, strategy: Strategy, cost: CostFunction,
                 limits: Sequence[Limit | str]) -> None:
        # no super().__init__: options, seed and random state are the wrapped strategy's
        self.strategy = strategy
        self.space, self.seed, self.options = strategy.space, strategy.seed, strategy.options
        self.name, self.report_fidelity = strategy.name, strategy.report_fidelity
        self.lookahead = strategy.lookahead
        self.cost = cost
        self.limits = tuple(lim if isinstance(lim, Limit) else Limit.parse(lim)
                            for lim in limits)
        self.skipped = 0

    @property
    def fidelities(self) -> tuple[str, ...]:
        return self.strategy.fidelities

    def allows(self, genome: Genome) -> bool:
        costs = self.cost(genome)
        return all(limit.allows(costs) for limit in self.limits)

    def ask(self) -> Candidate | None:
        for _ in range(MAX_REJECTS):
            candidate = self.strategy.ask()
            if candidate is None or self.allows(candidate.genome):
                return candidate
            self.skipped += 1
            self.strategy.discard(candidate)
        raise EpnasError(f"the filter rejected {MAX_REJECTS} candidates in a row: "
                         f"{self.strategy.name or 'the strategy'} proposes nothing within "
                         f"{', '.join(map(str, self.limits))}; loosen the limits")

    def tell(self, candidate: Candidate, result: Result) -> None:
        self.strategy.tell(candidate, result)

    def attach(self, context: SearchContext) -> None:
        self.context = context
        self.strategy.attach(context)

    def discard(self, candidate: Candidate) -> None:
        self.strategy.discard(candidate)

    @property
    def done(self) -> bool:
        return self.strategy.done

    def planned_trials(self) -> tuple[int, str] | None:
        return self.strategy.planned_trials()

    @property
    def extensible(self) -> bool:  # type: ignore[override]
        return self.strategy.extensible

    def extend(self, trials: int) -> None:
        self.strategy.extend(trials)

    def stats(self) -> list[dict[str, float]]:
        return self.strategy.stats()

    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state_dict(), "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.skipped = int(state["skipped"])


def early_exit(strategy: Strategy, cost: CostFunction,
               limits: Sequence[Limit | str]) -> Strategy:
    """``strategy`` wrapped in an :class:`EarlyExit` filter (unwrapped when no limits).

    Raises:
        EpnasError: a limit is on a metric ``cost`` does not give (tried on a genome
            sampled from the space, so a study refuses it before it writes anything).
    """
    if not limits:
        return strategy
    filtered = EarlyExit(strategy, cost, limits)
    filtered.allows(strategy.space.sample(np.random.default_rng(0)))
    return filtered


def constraint_limits(objective: Objective) -> list[Limit]:
    """The limits of a ``+filter`` strategy spec: each constraint of ``objective`` on a
    cost metric of :data:`FILTERABLE` gives ``max-METRIC`` for its upper bound and
    ``min-METRIC`` for its lower bound; constraints on other metrics are left to the reward.

    Raises:
        EpnasError: no constraint is on a filterable metric.
    """
    limits = []
    for c in objective.constraints:
        if c.metric in FILTERABLE:
            if c.high is not None:
                limits.append(Limit(c.metric, c.high, upper=True))
            if c.low is not None:
                limits.append(Limit(c.metric, c.low, upper=False))
    if not limits:
        given = ", ".join(str(c) for c in objective.constraints) or "none"
        raise EpnasError(f"+filter needs a constraint on {', '.join(FILTERABLE)} (e.g. "
                         f"--max-params 100k) to filter by; the constraints given: {given}")
    return limits
