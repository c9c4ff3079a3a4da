"""The numbers behind the report's plots: best-so-far curves, Pareto fronts, the
constraint box, per-episode figures and the ranking of architectures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epnas.objective import Objective
from epnas.report.data import (
    best_so_far,
    episode_stats,
    feasible_range,
    pareto_front,
    progress_by_time,
    ranked,
    read_run,
)
from epnas.store import TrialRecord

STATUSES = st.sampled_from(["done", "cached", "failed", "running", "queued"])


def record(i: int, status: str, accuracy: float | None, feasible: bool | None,
           end: float | None = None) -> TrialRecord:
    metrics = {} if accuracy is None else {"accuracy": accuracy}
    return TrialRecord(id=i, batch=0, position=i, key=f"k{i}", fidelity=None, genome_json="{}",
                       info={}, status=status, metrics=metrics, feasible=feasible,
                       start_time=0.0, end_time=end)


trial_lists = st.lists(st.tuples(STATUSES, st.one_of(st.none(), st.floats(0, 1)),
                                 st.booleans()), max_size=40)


@given(trial_lists)
def test_best_so_far_is_the_running_best_of_feasible_finished_trials(rows: list) -> None:
    trials = [record(i, s, a, f) for i, (s, a, f) in enumerate(rows, start=1)]
    curve = best_so_far(trials)
    assert len(curve) == len(trials)
    seen = [x for x in curve if not math.isnan(x)]
    assert seen == sorted(seen)  # monotone, and NaN only before the first feasible trial
    assert all(math.isnan(x) for x in curve[:len(curve) - len(seen)])
    for n, value in enumerate(curve, start=1):
        counted = [t.accuracy for t in trials[:n]
                   if t.status in ("done", "cached") and t.feasible and t.accuracy is not None]
        assert value == max(counted) if counted else math.isnan(value)


def test_best_so_far_ignores_failures_infeasible_and_unfinished() -> None:
    trials = [record(1, "done", 0.5, False), record(2, "done", 0.3, True),
              record(3, "failed", 0.9, True), record(4, "running", None, None),
              record(5, "cached", 0.4, True), record(6, "done", 0.8, False)]
    assert best_so_far(trials)[0] != best_so_far(trials)[0]  # NaN: nothing feasible yet
    assert best_so_far(trials)[1:] == [0.3, 0.3, 0.3, 0.4, 0.4]


def test_progress_by_time_orders_by_finish() -> None:
    trials = [record(1, "done", 0.5, True, end=30.0), record(2, "done", 0.7, True, end=10.0),
              record(3, "running", None, None), record(4, "failed", None, False, end=20.0)]
    assert progress_by_time(trials) == ([10.0, 20.0, 30.0], [0.7, 0.7, 0.7])
    assert progress_by_time([]) == ([], [])


points = st.lists(st.tuples(st.integers(1, 50).map(float), st.integers(0, 20).map(float)),
                  max_size=30)


@given(points)
def test_pareto_front_is_exactly_the_non_dominated_points(xy: list) -> None:
    front = pareto_front(xy)

    def dominated(p: tuple) -> bool:
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in xy)

    assert [xy[i][0] for i in front] == sorted(xy[i][0] for i in front)
    assert {xy[i] for i in front} == {p for p in xy if not dominated(p)}
    assert len(front) == len({xy[i] for i in front})  # one index per distinct point
    accuracies = [xy[i][1] for i in front]
    assert accuracies == sorted(accuracies) and len(set(accuracies)) == len(accuracies)


def test_pareto_front_small_case() -> None:
    xy = [(10, 0.5), (5, 0.6), (20, 0.9), (5, 0.4), (30, 0.9), (5, 0.6)]
    assert pareto_front(xy) == [1, 2]


def test_feasible_range_is_the_constraint_box() -> None:
    objective = Objective.of(["params::100k", "flops:1M:20M:0.8", "params:2k::"])
    assert feasible_range(objective, "params") == (2000, 1e5)
    assert feasible_range(objective, "flops") == (1e6, 2e7)
    assert feasible_range(objective, "intensity") is None
    assert feasible_range(Objective.of(["intensity:5:"]), "intensity") == (5, math.inf)


def test_feasible_trials_are_exactly_those_inside_the_box(runs: dict[str, Path]) -> None:
    run = read_run(runs["epnas"])
    low, high = feasible_range(run.objective, "params")
    assert (low, high) == (0.0, 60e3)
    inside = [low <= t.metrics["params"] <= high for t in run.scored]
    assert inside == [t.feasible for t in run.scored]
    assert any(inside) and not all(inside)  # the box splits this run


def test_a_real_run(runs: dict[str, Path]) -> None:
    run = read_run(runs["epnas"])
    assert len(run.trials) == 40 and run.counts.get("failed", 0) >= 5
    assert run.input_shape == (1, 8, 8) and run.num_classes == 10  # the synthetic defaults
    curve = best_so_far(run.trials)
    assert curve[-1] == run.summary.best.accuracy  # the report and `epnas status` agree
    label, rows = episode_stats(run)
    assert label == "episode" and len(rows) == len(run.episodes) >= 2
    assert [r["x"] for r in rows] == list(range(1, len(rows) + 1))
    for row, stored in zip(rows, run.episodes):
        assert row["feasible_share"] == stored["feasible_share"]
        assert 0 <= row["feasible_share"] <= 1 and row["entropy"] > 0
    top = ranked(run, 3)
    assert len({t.key for t in top}) == 3 and top[0].id == run.summary.best.id
    rewards = [t.reward for t in top]
    assert rewards == sorted(rewards, reverse=True) and all(t.feasible for t in top)


def test_runs_without_episodes_are_grouped_in_windows(runs: dict[str, Path]) -> None:
    run = read_run(runs["random"])
    assert not run.episodes and not run.summary.feasible
    label, rows = episode_stats(run)
    assert label == "trials (windows of 2)" and len(rows) == 6
    assert all(r["feasible_share"] == 0 for r in rows)
    finished = [t for t in run.trials if t.finished]
    assert rows[0]["mean_reward"] == pytest.approx(
        sum(t.reward for t in finished[:2]) / 2)
    assert [t.feasible for t in ranked(run, 2)] == [False, False]  # shown anyway
