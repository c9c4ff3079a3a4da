"""The objective (the paper's Eq. 1-3): worked numbers, parsing, edge cases."""

from __future__ import annotations

import math

import pytest

from epnas import EpnasError
from epnas.objective import Constraint, Objective, parse_size
from epnas.trial import Result

METRICS = {"accuracy": 0.9, "params": 150e3, "flops": 30e6, "intensity": 5.0}


def test_upper_bound() -> None:
    objective = Objective.of(["params::100k"])
    assert objective.violations(METRICS) == {"params": pytest.approx(0.5)}  # 150k is 50 % over
    assert objective.reward(METRICS) == pytest.approx(0.9 * 0.9 ** 0.5)  # 0.853815...
    assert objective.reward(METRICS) == pytest.approx(0.8538149682)
    assert not objective.feasible(METRICS)


def test_lower_bound() -> None:
    objective = Objective((Constraint("intensity", low=10),))
    assert objective.violations(METRICS) == {"intensity": pytest.approx(0.5)}  # (10 - 5) / 10
    assert objective.reward(METRICS) == pytest.approx(0.9 * 0.9 ** 0.5)
    assert Objective((Constraint("intensity", low=4),)).reward(METRICS) == 0.9


@pytest.mark.parametrize(("flops", "violation"), [(0.5e6, 0.5), (1e6, 0.0), (20e6, 0.0),
                                                   (30e6, 0.5), (60e6, 2.0)])
def test_both_bounds(flops: float, violation: float) -> None:
    objective = Objective.of(["flops:1M:20M:0.8"])
    metrics = {**METRICS, "flops": flops}
    assert objective.violations(metrics)["flops"] == pytest.approx(violation)
    assert objective.reward(metrics) == pytest.approx(0.9 * 0.8 ** violation)
    assert objective.feasible(metrics) == (violation == 0)


def test_several_constraints_multiply_with_their_own_penalty() -> None:
    objective = Objective.of(["params::100k:0.5", "flops::20M", "intensity:4::0.7"])
    # params 0.5 over with p = 0.5; flops 0.5 over with p = 0.9; intensity satisfied
    assert objective.reward(METRICS) == pytest.approx(0.9 * 0.5 ** 0.5 * 0.9 ** 0.5)
    assert objective.reward(METRICS) == pytest.approx(0.6037383539)
    assert objective.violations(METRICS) == pytest.approx(
        {"params": 0.5, "flops": 0.5, "intensity": 0.0})


def test_a_harsher_penalty_costs_more() -> None:
    rewards = [Objective.of([f"params::100k:{p}"]).reward(METRICS) for p in (0.99, 0.9, 0.5)]
    assert rewards == sorted(rewards, reverse=True)
    assert rewards[2] == pytest.approx(0.9 * math.sqrt(0.5))


def test_feasible_model_keeps_its_accuracy() -> None:
    objective = Objective.of(["params::200k", "flops:1M:"])
    scored = objective.score(Result("done", METRICS))
    assert scored.reward == 0.9 and scored.feasible is True
    assert Objective().score(Result("cached", METRICS)).reward == 0.9


def test_failed_result_scores_zero_and_infeasible() -> None:
    objective = Objective.of(["params::200k"])
    scored = objective.score(Result.failure("oom", "CUDA out of memory"))
    assert (scored.reward, scored.feasible, scored.status) == (0.0, False, "failed")
    assert scored.error == "CUDA out of memory"


def test_nan_accuracy_scores_zero_and_is_infeasible() -> None:
    scored = Objective.of(["params::200k"]).score(Result("done", {**METRICS,
                                                                  "accuracy": math.nan}))
    assert (scored.reward, scored.feasible) == (0.0, False)


def test_missing_metric_is_a_clear_error() -> None:
    objective = Objective.of(["latency::5"])
    with pytest.raises(EpnasError, match=r"'latency'.*reports only.*'params'"):
        objective.score(Result("done", METRICS))


@pytest.mark.parametrize(("text", "expected"), [
    ("params::100k", Constraint("params", None, 100e3, 0.9)),
    ("flops:1M:20M:0.8", Constraint("flops", 1e6, 20e6, 0.8)),
    ("intensity:10:", Constraint("intensity", 10.0, None)),
    ("memory::2GB", Constraint("memory", None, 2e9)),
    ("params::1e5:", Constraint("params", None, 1e5, 0.9)),
])
def test_parse(text: str, expected: Constraint) -> None:
    assert Constraint.parse(text) == expected
    assert Constraint.parse(str(expected)) == expected  # str() is parseable back


@pytest.mark.parametrize(("text", "message"), [
    ("params", "expected METRIC:LOW:HIGH"),
    ("params:1:2:0.5:9", "expected METRIC:LOW:HIGH"),
    (":1:2", "expected METRIC:LOW:HIGH"),
    ("params::", "needs a lower or an upper bound"),
    ("params::ten", "cannot read size 'ten'"),
    ("flops:20M:1M", "lower bound 2e\\+07 is above upper bound 1e\\+06"),
    ("params::100k:1.5", "penalty must be in \\(0, 1\\)"),
    ("params::100k:0", "penalty must be in \\(0, 1\\)"),
    ("params::0", "bounds must be positive"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(EpnasError, match=message):
        Constraint.parse(text)


@pytest.mark.parametrize(("text", "value"), [
    ("100k", 1e5), ("2.5M", 2.5e6), ("2GB", 2e9), ("1g", 1e9), ("7", 7.0), (".5k", 500.0),
    ("1e3", 1e3), (" 3 M ", 3e6), ("1T", 1e12), (42, 42.0), (0.5, 0.5),
])
def test_parse_size(text: str | float, value: float) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "k", "10x", "1..5", "-3k", "10 kk"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(EpnasError, match="cannot read size"):
        parse_size(text)


def test_unreadable_penalty_is_a_clear_error() -> None:
    with pytest.raises(EpnasError, match="penalty"):
        Constraint.parse("params::100k:abc")


@pytest.mark.parametrize("bounds", [(None, 2432123.0, 0.9), (0.1, 316346.0, 0.5),
                                    (1e-05, None, 0.95), (None, 1234567.891, 0.9)])
def test_a_constraint_reads_back_from_its_text_exactly(bounds) -> None:
    low, high, penalty = bounds
    constraint = Constraint("flops", low=low, high=high, penalty=penalty)
    assert Constraint.parse(str(constraint)) == constraint
