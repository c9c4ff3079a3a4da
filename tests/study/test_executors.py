"""Executors: the process pool's retries, timeouts and thread settings."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas.executors import (
    WORKER_MEMORY,
    EvaluatorSpec,
    InlineExecutor,
    Job,
    ProcessExecutor,
    available_cores,
    limit_workers,
    pin_devices,
)
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


@pytest.mark.parametrize("elastic", [True, False])
def test_idle_workers_lend_their_threads_to_the_last_trials(elastic: bool) -> None:
    """Three workers of 1 thread: once the short trials are done and nothing is left to
    dispatch, the long one trains on all three threads (unless elastic is off)."""
    space = epnas.spaces.get("layerwise")
    rng = np.random.default_rng(0)
    batch = [Job(i + 1, Candidate(space.sample(rng), "full", {"sleep": sleep}))
             for i, sleep in enumerate((2.0, 0.2, 0.2, 0.2))]
    # CPU workers (devices pinned to none): GPU workers never lend threads
    with ProcessExecutor(EvaluatorSpec("tests.study.helpers:ThreadProbe"), workers=3,
                         threads=1, elastic=elastic, devices=[None] * 3) as pool:
        outcomes = {o.trial_id: o.result.metrics for o in pool.run(batch)}
    assert outcomes[1]["min_threads"] == 1  # while others ran or waited to run
    assert outcomes[1]["max_threads"] == (3 if elastic else 1)
    assert all(outcomes[i]["min_threads"] == 1 for i in (2, 3))
    assert max(outcomes[i]["max_threads"] for i in (2, 3, 4)) <= (2 if elastic else 1)


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


@pytest.mark.parametrize(("workers", "visible", "count", "expected"), [
    (3, None, 0, [None, None, None]),  # no GPU: nothing pinned
    (4, None, 2, ["0", "1", "0", "1"]),  # round-robin, one device per worker
    (2, None, 4, ["0", "1"]),
    (3, "2,5", 2, ["2", "5", "2"]),  # among the devices this process may use
    (2, "GPU-a1, GPU-b2", 2, ["GPU-a1", "GPU-b2"]),
    (2, "", 0, [None, None]),  # CUDA_VISIBLE_DEVICES= hides every GPU
])
def test_gpu_pinning_is_round_robin(workers: int, visible: str | None, count: int,
                                    expected: list[str | None]) -> None:
    assert pin_devices(workers, visible, count) == expected


def test_workers_see_only_their_pinned_device(tmp_path: Path) -> None:
    spec = EvaluatorSpec("tests.study.helpers:Device")
    crash = EvaluatorSpec("tests.study.helpers:Device", {"crash_once": str(tmp_path / "crashed")})
    with ProcessExecutor(spec, workers=2, devices=["3", "7"]) as pool:
        outcomes = list(pool.run(jobs(4)))
    by_worker = {o.worker: o.result.metrics["device"] for o in outcomes}
    assert sorted(by_worker.values()) == [3.0, 7.0]
    assert all(w.endswith(f":gpu{int(d)}") for w, d in by_worker.items())
    # a worker that replaces a dead one keeps the dead one's device
    with ProcessExecutor(crash, workers=1, devices=["4"]) as pool:
        outcomes = list(pool.run(jobs(2)))
    assert (tmp_path / "crashed").exists()
    assert [o.result.metrics["device"] for o in outcomes] == [4.0, 4.0]


def test_env_json_records_versions_hardware_and_the_executor(tmp_path: Path) -> None:
    import json

    study = Study(strategy="random", evaluator=SLEEPY, workers=2, trials=2, out=tmp_path)
    with study:
        study.run()
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["epnas"] == epnas.__version__ and env["torch"] and env["python"]
    assert env["cpus"] >= 1 and env["torch_threads"] >= 1 and "cuda_devices" in env
    executor = env["executor"]
    assert executor["kind"] == "process" and executor["workers"] == 2
    assert executor["threads"] * 2 <= max(2, env["cpus"])
    assert len(executor["devices"]) == 2


def test_a_study_starts_its_workers_when_created_and_stops_them_on_a_refusal(
        tmp_path: Path) -> None:
    """Worker start-up (imports, loading data) overlaps the study's own set-up."""
    import multiprocessing

    with Study(strategy="random", evaluator=SLEEPY, workers=2, trials=2,
               out=tmp_path / "run") as study:
        pool = study.executor
        # one worker before run() (the others start when the dispatch needs them)
        assert isinstance(pool, ProcessExecutor) and len(pool._idle) == 1
        assert all(w.process.is_alive() for w in pool._idle)
        study.run()
    assert not multiprocessing.active_children()
    with pytest.raises(epnas.errors.EpnasError, match="another configuration"):
        Study(strategy="random", evaluator=SLEEPY, workers=2, trials=2, seed=1,
              out=tmp_path / "run")
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_ends_dispatch_and_the_run_even_with_every_worker_idle(workers: int) -> None:
    """With one worker, every outcome leaves the pool idle when ``stop`` turns true: the
    run must end there (it once waited forever for workers it had not started)."""
    import signal

    seen: list[int] = []

    def alarm(*_: object) -> None:
        raise TimeoutError("the pool did not stop")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    try:
        with ProcessExecutor(EvaluatorSpec(SLEEPY, {"sleep": 0.05}), workers=workers) as pool:
            for outcome in pool.run(jobs(8), stop=lambda: len(seen) >= 2):
                seen.append(outcome.trial_id)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert 2 <= len(seen) < 8
    inline = [o.trial_id for o in InlineExecutor(Sleepy()).run(jobs(8), stop=lambda: False)]
    assert inline == list(range(1, 9))
    done: list[int] = []
    for outcome in InlineExecutor(Sleepy()).run(jobs(8), stop=lambda: len(done) >= 3):
        done.append(outcome.trial_id)
    assert done == [1, 2, 3]


@pytest.mark.parametrize(("request_", "kwargs", "used", "why"), [
    (1000, {"cores": 2, "trials": 4, "memory": 64e9}, 2, "2 CPU cores available"),
    (8, {"cores": 16, "trials": 3, "memory": 64e9}, 3, "the budget is 3 trials"),
    (8, {"cores": 16, "memory": 3 * WORKER_MEMORY + 1}, 3, "memory available"),
    (8, {"cores": 16, "memory": 8 * WORKER_MEMORY, "trial_memory": WORKER_MEMORY}, 4,
     "estimated training memory of a typical candidate"),
    (8, {"cores": 16, "memory": WORKER_MEMORY / 2}, 1, "memory available"),
    (4, {"cores": 16, "trials": 100, "memory": 64e9}, 4, None),
])
def test_workers_are_limited_by_cores_budget_and_memory(request_: int, kwargs: dict,
                                                        used: int, why: str | None) -> None:
    limit = limit_workers(request_, **kwargs)
    assert (limit.workers, limit.requested) == (used, request_)
    if why is None:
        assert limit.reason is None
    else:
        assert why in limit.reason and f"using {used} workers instead of {request_}" in str(limit)


def test_workers_start_as_the_dispatch_needs_them() -> None:
    with ProcessExecutor(EvaluatorSpec(SLEEPY), workers=3) as pool:
        pool.start(1)
        assert len(pool._idle) == 1
        assert [o.result.status for o in pool.run(jobs(2))] == ["done", "done"]
        assert pool._spawned == 2  # a third worker had no job
        list(pool.run(jobs(1)))
        assert pool._spawned == 2


def test_a_study_limits_its_workers_by_the_memory_of_a_typical_trial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cores and budget allow 2 workers and the memory 2 idle ones, but not 2 training."""
    import epnas.executors

    monkeypatch.setattr(epnas.executors, "available_cores", lambda: 2)
    monkeypatch.setattr(epnas.executors, "available_memory", lambda: 3 * WORKER_MEMORY)
    monkeypatch.setattr(Sleepy, "trial_memory", lambda self, genome: WORKER_MEMORY)
    with Study(strategy="random", evaluator=SLEEPY, workers=8, trials=4,
               trial_timeout=60) as study:
        assert study.config.workers == 1 and study.executor.workers == 1
        assert "training memory" in study.worker_limit.reason
        study.run()
        assert len({t.worker for t in study.trials()}) == 1
    with Study(strategy="random", evaluator=SLEEPY, workers=8, trials=4) as study:
        assert isinstance(study.executor, InlineExecutor)  # one worker runs inline
