"""The strategy contract (:func:`epnas.testing.check_strategy`), run over every registered
strategy on every space it supports, property by property.

Resume rule checked there: a ``state_dict`` taken at any point between calls (also with
candidates asked but not yet told), saved with ``torch.save`` and loaded with
``torch.load(weights_only=True)`` into a fresh instance (same options and seed), makes
that instance behave exactly like the original. Outstanding candidates are then told
to the fresh instance as the store gives them back: copies rebuilt with
``Candidate.from_dict``, in ask order. A strategy that cannot checkpoint while
candidates are outstanding must say so by raising :class:`EpnasError` from
``state_dict``; the Study then checkpoints only between steps.
"""

from __future__ import annotations

from typing import Any

import pytest

from epnas.strategies import RandomSearch
from epnas.testing import STRATEGY_PROPERTIES, check_strategy
from tests.strategies.conftest import Case


@pytest.mark.parametrize("prop", STRATEGY_PROPERTIES)
def test_strategy_contract(case: Case, prop: str) -> None:
    check_strategy(case.strategy, case.space, evaluator=case.evaluator, options=case.options,
                   properties=[prop])


def test_a_class_is_checked_and_a_failed_property_named() -> None:
    check_strategy(RandomSearch, "layerwise", properties=["asks", "resume"])

    class Forgetful(RandomSearch):
        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass  # starts over instead of continuing

    with pytest.raises(AssertionError, match="strategy 'Forgetful' on space 'layerwise': "
                                             "property 'resume' failed: resumed after 6"):
        check_strategy(Forgetful, "layerwise", properties=["resume"])
