"""The synthetic evaluator: deterministic, cost-driven accuracy and injected failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

import epnas
from epnas import EpnasError
from epnas.evaluators import EVALUATORS, SyntheticEvaluator
from epnas.trial import Candidate


def candidates(space: epnas.Space, n: int, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [Candidate(space.sample(rng)) for _ in range(n)]


def test_deterministic_bounded_and_costed(space: epnas.Space) -> None:
    evaluator = SyntheticEvaluator()
    for candidate in candidates(space, 10):
        result = evaluator.evaluate(candidate)
        again = SyntheticEvaluator().evaluate(candidate)
        assert result == again and result.status == "done"
        assert 0.1 <= result.metrics["accuracy"] <= 0.99
        assert result.metrics["accuracy"] == evaluator.accuracy(candidate)
        cost = epnas.cost(candidate.genome, (1, 8, 8), 10)
        assert {k: result.metrics[k] for k in cost.as_dict()} == cost.as_dict()
        assert result.metrics["train_seconds"] == 0.0
        assert set(evaluator.metrics) <= set(result.metrics)
    assert evaluator.queries == 10


def test_bigger_networks_score_higher(space: epnas.Space) -> None:
    evaluator = SyntheticEvaluator()
    sample = candidates(space, 40, seed=1)
    size = [math.log(epnas.cost(c.genome, (1, 8, 8), 10).flops) for c in sample]
    accuracy = [evaluator.accuracy(c) for c in sample]
    assert len(set(accuracy)) > 30
    assert spearmanr(size, accuracy).statistic > 0.5


def test_proxy_fidelities_are_noisy_but_correlated() -> None:
    evaluator = SyntheticEvaluator()
    sample = candidates(epnas.spaces.get("layerwise"), 40, seed=2)
    full = [evaluator.accuracy(c) for c in sample]
    assert full == [evaluator.accuracy(Candidate(c.genome, "full")) for c in sample]
    proxy = [evaluator.accuracy(Candidate(c.genome, "c=0.25,e=5")) for c in sample]
    assert proxy != full and max(abs(a - b) for a, b in zip(proxy, full)) <= 0.025 + 1e-12
    assert spearmanr(full, proxy).statistic > 0.8


def test_injected_failures_and_nans() -> None:
    evaluator = SyntheticEvaluator(fail_every=3, nan_every=2)
    results = [evaluator.evaluate(c) for c in candidates(epnas.spaces.get("nb201"), 6)]
    statuses = [r.status for r in results]
    assert statuses == ["done", "done", "failed", "done", "done", "failed"]
    assert results[2].reason == "error" and "evaluation 3" in results[2].error
    nan = [math.isnan(r.metrics["accuracy"]) for r in results if r.ok]
    assert nan == [False, True, True, False]  # evaluations 1, 2, 4, 5
    assert results[1].accuracy == 0.0 and results[1].metrics["params"] > 0


@pytest.mark.parametrize("option", [{"fail_every": 0}, {"nan_every": -2}, {"width": 0}])
def test_bad_options(option: dict[str, float]) -> None:
    with pytest.raises(EpnasError, match=next(iter(option))):
        SyntheticEvaluator(**option)


def test_registered() -> None:
    assert EVALUATORS.resolve("synthetic") == ("synthetic", SyntheticEvaluator)
