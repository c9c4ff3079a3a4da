"""The Ray executor against a real local Ray instance (2 CPUs).

CI installs the ``test`` extra, which includes Ray: there a missing Ray fails the run
instead of skipping these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import ray
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed (pip install 'epnas[ray]')", allow_module_level=True)

from epnas.executors import EvaluatorSpec, RayExecutor
from tests.study.test_executors import SLEEPY, jobs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each Ray start costs seconds


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def test_search_on_a_local_ray_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "epnas", "search", "--ray", "--strategy", "random",
         "--evaluator", SLEEPY, "--evaluator-opt", "sleep=0.3", "--trials", "6",
         "--out", str(out), "--quiet", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["trials"] == 6 and summary["counts"] == {"done": 6}
    assert "on a local Ray" in result.stderr
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "epnas", "status", str(out), "--json"], cwd=ROOT,
        capture_output=True, text=True, timeout=60).stdout)
    workers = {t["worker"] for t in status["top"]}
    # two actors (one per CPU of this machine's Ray, at most 2 here) ran the trials
    assert all(w.startswith("ray:") for w in workers) and 1 <= len(workers) <= os.cpu_count()
    env = json.loads((out / "env.json").read_text())
    assert env["executor"]["kind"] == "ray"


def test_a_killed_ray_worker_is_retried_once_then_the_trial_fails(local_ray: None,
                                                                  tmp_path: Path) -> None:
    spec = EvaluatorSpec(SLEEPY, {"crash_once": str(tmp_path / "crashed")})
    with RayExecutor(spec, workers=2) as pool:
        outcomes = list(pool.run(jobs(3)))
    assert sorted(o.trial_id for o in outcomes) == [1, 2, 3]
    assert [o.result.status for o in outcomes] == ["done"] * 3
    assert (tmp_path / "crashed").exists()
    assert ray.is_initialized()  # an executor leaves a Ray it did not start running

    with RayExecutor(EvaluatorSpec(SLEEPY, {"crash_every": 1}), workers=2) as pool:
        outcomes = list(pool.run(jobs(2)))
    assert [o.result.reason for o in outcomes] == ["worker-lost"] * 2
    assert "died on every attempt (2)" in outcomes[0].result.error


def test_ray_timeout_and_threads_set_by_every_trial(local_ray: None) -> None:
    start = time.monotonic()
    with RayExecutor(EvaluatorSpec(SLEEPY, {"sleep": 60}), workers=2, timeout=2) as pool:
        outcomes = list(pool.run(jobs(2)))
    assert [o.result.reason for o in outcomes] == ["timeout"] * 2
    assert time.monotonic() - start < 40

    with RayExecutor(EvaluatorSpec("tests.study.helpers:Threads"), workers=1,
                     threads=2) as pool:
        outcomes = list(pool.run(jobs(3)))
    assert len({o.worker for o in outcomes}) == 1  # one reused actor
    assert [o.result.metrics["threads"] for o in outcomes] == [2, 2, 2]
