"""Resume after a real ``kill -9``: no finished trial lost, none evaluated twice.

Each test runs ``epnas search`` as a subprocess with a test evaluator whose cost is set
by ``sleep``, kills it with SIGKILL at a chosen moment, runs the same command again and
compares the finished run with an uninterrupted in-memory run of the same config.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from epnas.store import holder_pid
from epnas.study import Study

ROOT = Path(__file__).resolve().parents[2]
EVALUATOR = "tests.study.helpers:Sleepy"
STRATEGY_OPTS = {"branches": 4, "steps": 3, "episodes": 60}


def command(out: Path, *, trials: int, sleep: float, workers: int = 1,
            log: Path | None = None) -> list[str]:
    args = [sys.executable, "-m", "epnas", "search", "--strategy", "epnas",
            *(f"--strategy-opt={k}={v}" for k, v in STRATEGY_OPTS.items()),
            "--evaluator", EVALUATOR, "--evaluator-opt", f"sleep={sleep}",
            "--max-params", "100k", "--trials", str(trials), "--workers", str(workers),
            "--out", str(out), "--quiet"]
    if log is not None:
        args += ["--evaluator-opt", f"log={log}"]
    return args


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def rows(out: Path) -> list[tuple]:
    """(id, key, fidelity, status, reason, source, metrics, reward, feasible) per trial."""
    db_path = out / "study.db"
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT id, key, fidelity, status, reason, source, metrics, reward, "
                          "feasible FROM trials ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def finished(out: Path) -> list[tuple]:
    return [r for r in rows(out) if r[3] in ("done", "cached", "failed")]


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished too early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.005)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> None:
    wait_for(proc, ready)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def reference(trials: int) -> list[tuple]:
    """The same search, uninterrupted, in memory."""
    with Study(strategy="epnas", strategy_options=STRATEGY_OPTS, evaluator=EVALUATOR,
               evaluator_options={"sleep": 0}, max_params="100k", trials=trials) as study:
        study.run()
        return [(t.id, t.key, t.fidelity, t.status, t.reason, t.source, dict(t.metrics),
                 t.reward, t.feasible) for t in study.trials()]


def comparable(stored: list[tuple]) -> list[tuple]:
    return [(*r[:6], json.loads(r[6]), r[7], None if r[8] is None else bool(r[8]))
            for r in stored]


def resume_and_check(out: Path, args: list[str], log: Path | None, trials: int) -> None:
    before = finished(out)
    evaluated_before = len(log.read_text().splitlines()) if log and log.exists() else 0
    assert holder_pid(out) is None  # the killed process's lock is free
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    after = rows(out)
    assert len(after) == trials and all(r[3] in ("done", "cached", "failed") for r in after)
    assert [r[0] for r in after] == list(range(1, trials + 1))
    by_id = {r[0]: r for r in after}
    assert all(by_id[r[0]] == r for r in before), "a finished trial changed"
    done_keys = [(r[1], r[2]) for r in after if r[3] == "done"]
    assert len(done_keys) == len(set(done_keys)), "a (key, fidelity) was evaluated twice"
    if log is not None:
        finished_keys = {r[1] for r in before if r[3] == "done"}
        again = log.read_text().splitlines()[evaluated_before:]
        assert not finished_keys & {line.split()[0] for line in again}
    assert comparable(after) == reference(trials)


@pytest.mark.parametrize("moment", [pytest.param(1, marks=pytest.mark.slow), 6,
                                    pytest.param(16, marks=pytest.mark.slow)])
def test_kill_during_a_trial_then_resume(tmp_path: Path, moment: int) -> None:
    out, log = tmp_path / "run", tmp_path / "evaluations.log"
    args = command(out, trials=24, sleep=0.1, log=log)
    proc = start(args)
    kill_when(proc, lambda: len(finished(out)) >= moment)
    assert moment <= len(finished(out)) < 24
    resume_and_check(out, args, log, 24)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.2, 2.5, 3.4])
def test_kill_at_arbitrary_instants_of_a_fast_run(tmp_path: Path, delay: float) -> None:
    """With instant trials most of the time goes to the store and the strategy; the later
    kills come after the first strategy checkpoints (study.CHECKPOINT_INTERVAL)."""
    out = tmp_path / "run"
    args = command(out, trials=600, sleep=0)
    proc = start(args)
    kill_when(proc, lambda: len(finished(out)) >= 1 and time.sleep(delay) is None)
    assert 1 < len(finished(out)) < 600
    resume_and_check(out, args, None, 600)


@pytest.mark.slow
def test_kill_twice_with_two_workers(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "evaluations.log"
    args = command(out, trials=24, sleep=0.2, workers=2, log=log)
    for moment in (3, 12):
        proc = start(args)
        kill_when(proc, lambda m=moment: len(finished(out)) >= m)
    resume_and_check(out, args, log, 24)


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_run_completes(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "evaluations.log"
    args = command(out, trials=16, sleep=0.3, workers=2, log=log)
    proc = start(args)
    wait_for(proc, lambda: bool(finished(out)))
    victim = worker_of(out, finished(out)[0][0])
    os.kill(int(victim.split(":")[1]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert comparable(rows(out)) == reference(16)
    workers = {worker_of(out, i).split(":")[0] for i in range(1, 17) if worker_of(out, i)}
    assert "w3" in workers  # the dead worker was replaced
    # the trial it died with is recorded (run again once, and why) and status shows it
    status = subprocess.run([sys.executable, "-m", "epnas", "status", str(out), "--json"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    retried = json.loads(status.stdout)["retried"]
    assert len(retried) == 1 and retried[0]["retries"] == 1 and retried[0]["status"] == "done"
    assert retried[0]["lost"] == (f"worker process died (killed by signal 9 (SIGKILL)) "
                                  f"on {victim}")
    text = subprocess.run([sys.executable, "-m", "epnas", "status", str(out)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert f"trial #{retried[0]['id']} (done): its worker died, run again 1x: " in text


def worker_of(out: Path, trial_id: int) -> str:
    db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT worker FROM trials WHERE id = ?", (trial_id,)).fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = command(out, trials=20, sleep=0.1)
    proc = start(args)
    wait_for(proc, lambda: len(finished(out)) >= 3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    statuses = {r[3] for r in rows(out)}
    assert "running" not in statuses  # running trials went back to queued
    resume_and_check(out, args, None, 20)
