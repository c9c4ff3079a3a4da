"""The strategy contract, run over every registered strategy on every space it supports.

Resume rule tested here: a ``state_dict`` taken at any point between calls (also with
candidates asked but not yet told), saved with ``torch.save`` and loaded with
``torch.load(weights_only=True)`` into a fresh instance (same options and seed), makes
that instance behave exactly like the original. Outstanding candidates are then told
to the fresh instance as the store gives them back: copies rebuilt with
``Candidate.from_dict``, in ask order. A strategy that cannot checkpoint while
candidates are outstanding must say so by raising :class:`EpnasError` from
``state_dict``; the Study then checkpoints only between steps.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from epnas import EpnasError, strategies
from epnas.evaluators import SyntheticEvaluator
from epnas.trial import Candidate
from tests.strategies.conftest import Case, checkpoint, same

BUDGET = 24


def test_asks_valid_json_ready_candidates(case: Case) -> None:
    strategy = case.make()
    run = case.drive(strategy, BUDGET)
    assert run.candidates, "the strategy asked for nothing"
    for candidate in run.candidates:
        assert candidate.genome.space == case.space.name
        case.space.validate(candidate.genome)
        assert candidate.fidelity is None or isinstance(candidate.fidelity, str)
        data = json.loads(json.dumps(candidate.to_dict(), allow_nan=False))
        assert data == candidate.to_dict(), "info must be JSON-native (lists, not tuples)"
        assert Candidate.from_dict(data).to_dict() == candidate.to_dict()
    if strategy.done:
        assert strategy.ask() is None and strategy.ask_batch(3) == []
    else:
        assert len(run.candidates) == BUDGET


def test_same_seed_same_asks(case: Case) -> None:
    first = case.drive(case.make(seed=3), BUDGET)
    second = case.drive(case.make(seed=3), BUDGET)
    assert first.asks == second.asks


def test_results_reach_the_strategy(case: Case) -> None:
    strategy = case.make()
    batch = strategy.ask_batch(4)
    before = checkpoint(strategy)
    result = case.objective.score(case.evaluator.evaluate(batch[0]))
    strategy.tell(batch[0], result)
    assert not same(checkpoint(strategy), before), "tell left no trace in state_dict"
    for candidate in batch[1:]:
        strategy.tell(candidate, case.objective.score(case.evaluator.evaluate(candidate)))
    case.drive(strategy, BUDGET)
    stats = strategy.stats()
    assert isinstance(stats, list)
    for row in stats:
        assert all(isinstance(k, str) and isinstance(v, int | float) for k, v in row.items())


@pytest.mark.parametrize("split", [6, 8])
def test_resume_between_calls(case: Case, split: int) -> None:
    original = case.make(seed=5)
    first = case.drive(original, split)
    state = checkpoint(original)
    rest = case.drive(original, BUDGET - split)

    resumed = case.make(seed=5)
    resumed.load_state_dict(state)
    assert first.candidates and rest.candidates, "nothing to compare"
    assert case.drive(resumed, BUDGET - split).asks == rest.asks


def test_resume_with_outstanding_candidates(case: Case) -> None:
    original = case.make(seed=7)
    case.drive(original, 6)
    batch = original.ask_batch(4)
    assert batch or original.done
    results = [case.objective.score(case.evaluator.evaluate(c)) for c in batch]
    told = len(batch) // 2
    for candidate, result in zip(batch[:told], results[:told]):
        original.tell(candidate, result)
    try:
        state = checkpoint(original)
    except EpnasError as exc:  # the documented refusal; it must say why
        assert str(exc)
        return
    for candidate, result in zip(batch[told:], results[told:]):
        original.tell(candidate, result)
    rest = case.drive(original, BUDGET)

    resumed = case.make(seed=7)
    resumed.load_state_dict(state)
    for candidate, result in zip(batch[told:], results[told:]):
        resumed.tell(Candidate.from_dict(json.loads(json.dumps(candidate.to_dict()))), result)
    assert case.drive(resumed, BUDGET).asks == rest.asks


@pytest.mark.parametrize("failures", [{"fail_every": 3, "nan_every": 4}, {"fail_every": 1}],
                         ids=["some", "all"])
def test_failures_do_not_crash(case: Case, failures: dict[str, int]) -> None:
    strategy = case.make()
    run = case.drive(strategy, BUDGET, evaluator=SyntheticEvaluator(**failures))
    failed = [r for r in run.results if not r.ok or math.isnan(r.metrics["accuracy"])]
    assert failed and all(r.reward == 0.0 for r in failed)
    assert all(r.feasible is False for r in run.results if not r.ok)
    assert len(run.candidates) == BUDGET or strategy.done
    for candidate in run.candidates:
        case.space.validate(candidate.genome)
    checkpoint(strategy)


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_ask_batch_returns_at_most_n(case: Case, n: int) -> None:
    strategy = case.make()
    batch = strategy.ask_batch(n)
    assert len(batch) <= n and (len(batch) >= 1 or n == 0)
    for candidate in batch:
        strategy.tell(candidate, case.objective.score(case.evaluator.evaluate(candidate)))
    assert len(strategy.ask_batch(n)) <= n


def test_unknown_option_is_named(case: Case) -> None:
    with pytest.raises(EpnasError, match="no_such_option"):
        strategies.get(case.strategy, case.space, seed=0, no_such_option=1)


def test_start_from_seeds_or_refuses_clearly(case: Case) -> None:
    """``start_from``: seeds shape the first asks (deterministically), or a clear refusal."""
    rng = np.random.default_rng(7)
    seeds = [case.space.sample(rng) for _ in range(2)]
    strategy = case.make()
    try:
        strategy.start_from(seeds)
    except EpnasError as exc:
        assert "cannot start from given genomes" in str(exc)
        return
    run = case.drive(strategy, BUDGET)
    keys = {s.key for s in seeds}
    first = run.candidates[: len(seeds)]
    assert any(c.key in keys or c.info.get("parent") in keys for c in first), \
        "the seeds did not shape the first candidates"
    again = case.make()
    again.start_from(seeds)
    assert case.drive(again, BUDGET).asks == run.asks
