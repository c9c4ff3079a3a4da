"""The (strategy, space) cases of the strategy contract suite (:mod:`epnas.testing`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import epnas
from epnas import EpnasError, strategies
from epnas.evaluators import Evaluator, SyntheticEvaluator, TabularEvaluator, tabular
from epnas.strategies import STRATEGIES

# Small schedules, so that episode boundaries (policy updates, reseeding, `done`) fall
# inside the suite's budgets; a strategy not listed here runs with its defaults.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "epnas": {"branches": 3, "steps": 2, "episodes": 3},
    "pnas": {"beam": 4, "initial": 6, "max_expansions": 200},
}


@dataclass
class Case:
    """One strategy on one space, with the evaluator that scores it."""

    strategy: str
    space: epnas.Space
    evaluator: Evaluator

    @property
    def options(self) -> dict[str, Any]:
        return SMALL_OPTIONS.get(self.strategy, {})


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
    return Case(name, space, evaluator_for(space))
