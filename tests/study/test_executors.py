"""Executors: the process pool's retries, timeouts and thread settings."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import epnas
from epnas.executors import EvaluatorSpec, InlineExecutor, Job, ProcessExecutor, available_cores
from epnas.study import Study
from epnas.trial import Candidate
from tests.study.helpers import Sleepy

SLEEPY = "tests.study.helpers:Sleepy"


def jobs(n: int) -> list[Job]:
    space = epnas.spaces.get("layerwise")
    rng = np.random.default_rng(0)
    return [Job(i + 1, Candidate(space.sample(rng), "full")) for i in range(n)]


def test_pool_matches_inline_and_uses_every_worker() -> None:
    batch = jobs(6)
    inline = {o.trial_id: o.result for o in InlineExecutor(Sleepy()).run(batch)}
    with ProcessExecutor(EvaluatorSpec(SLEEPY, {"sleep": 0.2}), workers=2) as pool:
        outcomes = list(pool.run(batch))
        again = list(pool.run(batch[:2]))  # workers are reused between batches
    assert {o.trial_id: o.result for o in outcomes} == inline
    assert len({o.worker for o in outcomes}) == 2
    assert {o.worker for o in again} <= {o.worker for o in outcomes}


def test_a_dead_worker_costs_one_retry(tmp_path: Path) -> None:
    spec = EvaluatorSpec(SLEEPY, {"crash_once": str(tmp_path / "crashed")})
    with ProcessExecutor(spec, workers=2) as pool:
        outcomes = list(pool.run(jobs(3)))
    assert sorted(o.trial_id for o in outcomes) == [1, 2, 3]
    assert all(o.result.status == "done" for o in outcomes)
    assert (tmp_path / "crashed").exists()


def test_a_trial_that_always_kills_its_worker_fails_worker_lost() -> None:
    study = Study(strategy="random", evaluator=SLEEPY, evaluator_options={"crash_every": 1},
                  workers=2, trials=3)
    with study:
        study.run()
        trials = study.trials()
    assert [t.reason for t in trials] == ["worker-lost"] * 3
    assert "on every attempt (2)" in trials[0].error


def test_trial_timeout_kills_only_the_overdue_trial() -> None:
    start = time.monotonic()
    study = Study(strategy="random", evaluator=SLEEPY, evaluator_options={"sleep": 30},
                  trial_timeout=1, trials=2)
    with study:
        study.run()
        trials = study.trials()
    assert [(t.status, t.reason) for t in trials] == [("failed", "timeout")] * 2
    assert "1 s timeout" in trials[0].error
    assert time.monotonic() - start < 20


def test_evaluator_set_up_is_not_trial_time() -> None:
    spec = EvaluatorSpec(SLEEPY, {"setup": 1.5, "sleep": 0.1})
    with ProcessExecutor(spec, workers=1, timeout=1) as pool:
        outcomes = list(pool.run(jobs(2)))
    assert [o.result.status for o in outcomes] == ["done", "done"]


def test_workers_split_the_cores() -> None:
    pool = ProcessExecutor(EvaluatorSpec(SLEEPY), workers=2, threads=None)
    assert pool.threads >= 1 and pool.threads * 2 <= max(2, available_cores())
