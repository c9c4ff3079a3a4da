"""The SQLite store: round trips, schema versions, the run-directory lock, trials.csv."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import epnas
from epnas.errors import EpnasError
from epnas.store import SCHEMA_VERSION, NewTrial, Store, holder_pid
from epnas.trial import Candidate, Result


def candidates(n: int, seed: int = 0) -> list[Candidate]:
    space = epnas.spaces.get("layerwise")
    rng = np.random.default_rng(seed)
    return [Candidate(space.sample(rng), "full", {"index": i}) for i in range(n)]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_round_trip(tmp_path: Path) -> None:
    c = candidates(3)
    done = Result("done", {"accuracy": 0.5, "params": 1000.0}, reward=0.5, feasible=True)
    state = {"rng": np.random.default_rng(1).bit_generator.state, "weights": torch.arange(4.0),
             "steps": [1, 2], "name": "x"}
    with Store(tmp_path) as store:
        ids = store.open_batch(0, 3, [NewTrial(0, c[0], "running"), NewTrial(1, c[1], "running"),
                                      NewTrial(2, c[2], "cached", done, source=1)])
        assert ids == [1, 2, 3]
        store.finish(1, done, worker="w1", start=10.0, end=12.5)
        store.finish(2, Result.failure("timeout", "too slow"), worker="w2")
        store.close_batch(0, state, [{"episode": 0, "mean_reward": 0.4}], {"elapsed": 3.0})
    with Store(tmp_path) as store:
        trials = store.trials()
        assert [t.status for t in trials] == ["done", "failed", "cached"]
        first = trials[0]
        assert first.genome == c[0].genome and first.candidate == c[0]
        assert first.result == done and (first.start_time, first.end_time) == (10.0, 12.5)
        assert trials[1].reason == "timeout" and trials[1].error == "too slow"
        assert trials[2].source == 1 and trials[2].metrics == done.metrics
        batch, loaded = store.checkpoint()
        assert batch == 0 and loaded["rng"] == state["rng"]
        assert torch.equal(loaded["weights"], state["weights"]) and loaded["steps"] == [1, 2]
        assert store.episodes() == [{"episode": 0, "mean_reward": 0.4}]
        assert store.get_meta("elapsed") == 3.0
        assert store.counts() == {"done": 1, "failed": 1, "cached": 1}
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["trial_id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["accuracy"] == "0.5" and rows[0]["accuracy_pct"] == "50.00"
    assert rows[0]["feasible"] == "1" and rows[1]["reason"] == "timeout"
    assert {"key", "status", "params", "flops", "intensity", "reward"} <= set(rows[0])
    assert epnas.load_genome(rows[0]["genome"]) == c[0].genome


def test_in_memory_store_writes_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store(None)
    store.open_batch(0, 1, [NewTrial(0, candidates(1)[0], "running")])
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "study.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    before = snapshot(tmp_path)
    with pytest.raises(EpnasError, match="newer epnas"):
        Store(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "study.db").write_text("not a database at all" * 100)
    with pytest.raises(EpnasError, match="not a study database"):
        Store(tmp_path)


HOLD = textwrap.dedent("""
    import sys, time
    from epnas.store import Store
    store = Store(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def test_second_live_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert holder_pid(tmp_path) == holder.pid
        with pytest.raises(EpnasError, match=f"in use by process {holder.pid}"):
            Store(tmp_path)
        with Store(tmp_path, readonly=True) as reader:  # status works while a run holds it
            assert reader.count() == 0
    finally:
        holder.kill()
        holder.wait()
    assert holder_pid(tmp_path) is None  # the lock of a killed process is free at once
    Store(tmp_path).close()


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "lock").write_text(f"{dead.pid}\n")
    with Store(tmp_path):
        assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "lock").exists()


def test_lock_is_exclusive_within_one_process(tmp_path: Path) -> None:
    with Store(tmp_path), pytest.raises(EpnasError, match=f"process {os.getpid()}"):
        Store(tmp_path)


def test_readonly_open_of_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(EpnasError, match="holds no study"):
        Store(tmp_path, readonly=True)


def test_requeue_running_and_batches_after(tmp_path: Path) -> None:
    c = candidates(2)
    with Store(tmp_path) as store:
        store.open_batch(0, 2, [NewTrial(0, c[0], "running"), NewTrial(1, c[1], "running")])
        store.finish(1, Result("done", {"accuracy": 0.1}, reward=0.1, feasible=True))
        assert store.requeue_running() == 1
        [(batch, size, rows)] = store.batches_after(-1)
        assert (batch, size) == (0, 2)
        assert [r.status for r in rows] == ["done", "queued"]
        assert store.checkpoint() is None and store.next_batch() == 1


def test_a_schema_1_store_is_read_as_it_is_and_migrated_when_written(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.open_batch(0, 2, [NewTrial(i, c, "running") for i, c in enumerate(candidates(2))])
    db = sqlite3.connect(tmp_path / "study.db")
    db.executescript("ALTER TABLE trials DROP COLUMN retries; ALTER TABLE trials DROP COLUMN "
                     "lost; PRAGMA user_version=1;")
    db.close()
    with Store(tmp_path, readonly=True) as store:  # status of an old run: nothing written
        assert [(t.retries, t.lost) for t in store.trials()] == [(0, None), (0, None)]
    with Store(tmp_path) as store:
        store.finish(1, Result("done", {"accuracy": 0.5}), retries=1,
                     lost="worker process died (killed by signal 9 (SIGKILL)) on w1:7")
        assert store.trials()[0].retries == 1 and "SIGKILL" in store.trials()[0].lost
    db = sqlite3.connect(tmp_path / "study.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()
