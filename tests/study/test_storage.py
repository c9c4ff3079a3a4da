"""Storage faults (issue 16, item 3): a disk that fills up or turns read-only stops the
search with one line naming the path and the cause, leaves what it interrupted queued
(not failed) so that ``epnas resume`` completes it, and a run on read-only storage can
still be read by ``status``, ``report``, ``export`` and ``predict``.

The real file-system tests mount a small tmpfs (root only); elsewhere they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from epnas.cli import main
from epnas.errors import StorageError
from epnas.store import Store
from epnas.study import Study

ROOT = Path(__file__).resolve().parents[2]
EVALUATOR = "tests.study.helpers:Sleepy"


def statuses(run: Path) -> dict[int, str]:
    with Store(run, readonly=True) as store:
        return {t.id: t.status for t in store.trials()}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_trial_that_cannot_save_stops_the_search_and_stays_queued(
        tmp_path: Path, workers: int) -> None:
    run, full = tmp_path / "run", tmp_path / "disk-full"
    settings = {"space": "layerwise", "strategy": "random", "evaluator": EVALUATOR,
                "evaluator_options": {"full_while": str(full), "sleep": 0.05},
                "trials": 8, "workers": workers, "out": str(run)}
    with Study(**settings) as study:
        study.optimize(trials=3)
        full.touch()
        with pytest.raises(StorageError) as caught:
            study.optimize(trials=8)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{run}/trials/" in message and "model.pt: No space left on device" in message
    assert f"epnas resume {run}" in message
    states = statuses(run)
    assert "failed" not in states.values()
    assert [states[i] for i in (1, 2, 3)] == ["done"] * 3
    assert "queued" in states.values() and "running" not in states.values()

    full.unlink()  # space freed: the same run completes what was interrupted
    with Study(**settings) as study:
        summary = study.run()
    assert summary.counts == {"done": 8} and summary.trials == 8


# --- on a real (small, then read-only) file system ------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def search(out: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "epnas", "search", "--strategy", "random", "--seed", "1",
            "--trials", str(trials), "--out", str(out), "--quiet", *extra]


def finished(out: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM trials WHERE status = 'done'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def fill(fs: Path) -> Path:
    """Write a file that takes every free byte of ``fs``."""
    filler = fs / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


@pytest.mark.slow
def test_disk_full_on_a_small_file_system_then_resume(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "32M") as fs:
        out = fs / "run"
        proc = subprocess.Popen(search(out, 6), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while finished(out) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        filler = fill(fs)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith(f"epnas: error: storage error: {out}")
        assert "No space left on device" in stderr
        states = statuses(out)
        assert "failed" not in states.values() and len(states) < 6

        filler.unlink()
        resumed = subprocess.run([sys.executable, "-m", "epnas", "resume", str(out), "--quiet"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert set(statuses(out).values()) <= {"done", "cached"} and len(statuses(out)) == 6


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_a_run_on_read_only_storage_is_read(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "run"
    assert main(search(source, 2)[3:]) == 0
    # A killed run leaves its last transactions in study.db-wal: one held open here
    # (a trial marked failed) is copied with the run and must be seen.
    db = sqlite3.connect(source / "study.db", isolation_level=None)
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("UPDATE trials SET status = 'failed', reason = 'error' WHERE id = 2")
    capsys.readouterr()
    with tmpfs(tmp_path / "fs", "64M") as fs:
        for name, wal in (("clean", False), ("killed", True)):
            run = fs / name
            shutil.copytree(source, run, ignore=None if wal else shutil.ignore_patterns("*-wal",
                                                                                     "*-shm"))
            assert (run / "study.db-wal").exists() == wal
        db.close()
        copied = sorted(p.name for p in (fs / "killed").iterdir())
        image = tmp_path / "digit.png"
        from PIL import Image
        Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype("uint8")) \
            .save(image)
        remount(fs, "ro")
        for name, failed in (("clean", 0), ("killed", 1)):
            run = fs / name
            code, out, err = run_cli("status", str(run), "--json", capsys=capsys)
            assert code == 0, err
            assert json.loads(out)["counts"].get("failed", 0) == failed
            code, out, err = run_cli("report", str(run), "--out", str(tmp_path / f"r-{name}"),
                                     capsys=capsys)
            assert code == 0, err
            code, _, err = run_cli("report", str(run), capsys=capsys)
            assert code == 2 and "Read-only file system; write it elsewhere with --out" in err
            code, _, err = run_cli("export", str(run), "--format", "pytorch", "--trial", "1",
                                   "--out", str(tmp_path / f"e-{name}"), capsys=capsys)
            assert code == 0, err
            code, out, err = run_cli("predict", str(run), str(image), capsys=capsys)
            assert code == 0 and "digit.png" in out, err
        # nothing written, nothing left behind
        assert sorted(p.name for p in (fs / "killed").iterdir()) == copied
