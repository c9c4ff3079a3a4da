"""The evaluator contract (:func:`epnas.testing.check_evaluator`), run over every
registered evaluator, property by property."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import epnas
from epnas import EpnasError
from epnas.evaluators import (
    EVALUATORS,
    Evaluator,
    SupernetEvaluator,
    SyntheticEvaluator,
    TabularEvaluator,
    TrainingEvaluator,
    tabular,
)
from epnas.testing import EVALUATOR_PROPERTIES, check_evaluator
from epnas.trial import Candidate, Result
from tests.evaluators.test_distill import contract_case
from tests.supernet.conftest import TINY, save_tiny


def _table() -> TabularEvaluator:
    try:
        return TabularEvaluator(tabular.default_path())
    except EpnasError as exc:
        pytest.skip(f"the tabular evaluator needs the NAS-Bench-201 CSV: {exc}")


_SUPERNET = tempfile.TemporaryDirectory()  # an untrained tiny supernet, saved on first use


def _supernet() -> SupernetEvaluator:
    path = Path(_SUPERNET.name)
    if not (path / "supernet.json").exists():
        save_tiny(path)
    return SupernetEvaluator(str(path), device="cpu")


# How to make each registered evaluator, and a space whose genomes it evaluates.
CASES: dict[str, tuple[Callable[[], Evaluator], epnas.Space]] = {
    "distill": (contract_case, epnas.spaces.get("layerwise", max_layers=3, channels=(8, 16))),
    "supernet": (_supernet, epnas.spaces.get("multistage", **TINY)),
    "synthetic": (SyntheticEvaluator, epnas.spaces.get("cellwise")),
    "tabular": (_table, epnas.spaces.get("nb201")),
    "training": (lambda: TrainingEvaluator("digits", schedule={"epochs": 1}),
                 epnas.spaces.get("layerwise", max_layers=3, channels=(8, 16))),
}


def test_every_registered_evaluator_has_a_case() -> None:
    assert set(EVALUATORS.names()) <= set(CASES)


@pytest.mark.parametrize("prop", EVALUATOR_PROPERTIES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_evaluator_contract(name: str, prop: str) -> None:
    make, space = CASES[name]
    check_evaluator(make(), space, properties=[prop])


def test_a_failed_property_is_named() -> None:
    class Percent(SyntheticEvaluator):
        def evaluate(self, candidate: Candidate) -> Result:
            result = super().evaluate(candidate)
            return Result("done", {**result.metrics, "accuracy": 100 * result.accuracy})

    with pytest.raises(AssertionError, match=r"evaluator Percent on space 'layerwise': "
                                             r"property 'evaluate' failed: accuracy .* is not "
                                             r"a fraction"):
        check_evaluator(Percent(), "layerwise")
