"""A Study-like driver and the (strategy, space) cases of the strategy contract suite."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

import epnas
from epnas import EpnasError, strategies
from epnas.evaluators import Evaluator, SyntheticEvaluator, TabularEvaluator, tabular
from epnas.objective import Constraint, Objective
from epnas.strategies import STRATEGIES, Strategy
from epnas.trial import Candidate, Result

# Small schedules, so that episode boundaries (policy updates, reseeding, `done`) fall
# inside the suite's budgets; a strategy not listed here runs with its defaults.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "epnas": {"branches": 3, "steps": 2, "episodes": 3},
    "pnas": {"beam": 4, "initial": 6, "max_expansions": 200},
}


@dataclass
class Run:
    """What a driven strategy asked for and what it was told, in ask order."""

    candidates: list[Candidate] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    @property
    def asks(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.candidates]


def drive(strategy: Strategy, evaluator: Evaluator, objective: Objective, n_trials: int,
          batch: int = 4) -> Run:
    """Run ``strategy`` the way the inline Study does, until ``n_trials`` or ``done``.

    Asks up to ``batch`` candidates at a time, evaluates them, scores every result with
    ``objective`` and tells them in ask order.
    """
    run = Run()
    while len(run.candidates) < n_trials and not strategy.done:
        asked = strategy.ask_batch(min(batch, n_trials - len(run.candidates)))
        assert asked or strategy.done, \
            "the strategy asked for nothing with no results outstanding and is not done"
        for candidate in asked:
            result = objective.score(evaluator.evaluate(candidate))
            strategy.tell(candidate, result)
            run.candidates.append(candidate)
            run.results.append(result)
    return run


def checkpoint(strategy: Strategy) -> dict[str, Any]:
    """``state_dict`` through ``torch.save`` and ``torch.load(weights_only=True)``.

    That is how the store persists it (never a pickle); the state must come back equal.
    """
    state = strategy.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert same(loaded, state), "state_dict changed through torch.save / torch.load"
    return loaded


def same(a: Any, b: Any) -> bool:
    """Deep equality of plain data and tensors (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@dataclass
class Case:
    """One strategy on one space, with an evaluator and a half-feasible objective."""

    strategy: str
    space: epnas.Space
    evaluator: Evaluator
    objective: Objective

    @property
    def options(self) -> dict[str, Any]:
        return SMALL_OPTIONS.get(self.strategy, {})

    def make(self, seed: int = 0) -> Strategy:
        return strategies.get(self.strategy, self.space, seed=seed, **self.options)

    def drive(self, strategy: Strategy, n_trials: int, batch: int = 4,
              evaluator: Evaluator | None = None) -> Run:
        return drive(strategy, evaluator or self.evaluator, self.objective, n_trials, batch)


def _cases() -> Iterator[Any]:
    for name in strategies.names():
        _, cls = STRATEGIES.resolve(name)
        for space_name in epnas.spaces.names():
            if cls.supports(epnas.spaces.get(space_name)):
                yield pytest.param((name, space_name), id=f"{name}-{space_name}")


def evaluator_for(space: epnas.Space) -> Evaluator:
    """The NB201 table for nb201 (skipped without it), the synthetic evaluator otherwise."""
    if space.name != "nb201":
        return SyntheticEvaluator()
    try:
        path = tabular.default_path()
    except EpnasError as exc:
        pytest.skip(f"nb201 runs on the tabular benchmark: {exc}")
    return TabularEvaluator(path)


@pytest.fixture(params=list(_cases()))
def case(request: pytest.FixtureRequest) -> Case:
    """Every registered strategy on every registered space it supports."""
    name, space_name = request.param
    space = epnas.spaces.get(space_name)
    evaluator = evaluator_for(space)
    rng = np.random.default_rng(0)
    params = [epnas.cost(space.sample(rng), evaluator.input_shape, evaluator.num_classes).params
              for _ in range(9)]
    # an upper bound at the median makes about half the candidates infeasible
    objective = Objective((Constraint("params", high=float(np.median(params))),))
    return Case(name, space, evaluator, objective)
