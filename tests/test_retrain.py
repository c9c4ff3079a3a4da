"""epnas retrain, run as a user runs it: killed mid-training and run again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import epnas

# One thread: the tiny networks do not gain from two, and two slow down badly on a
# machine shared with other processes.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def retrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epnas", "retrain", *args],
                          capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.slow  # a real kill -9 mid-training and a resume: ~16 s
def test_retrain_killed_after_an_epoch_resumes_and_finishes(tiny_run: Path,
                                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    best = epnas.load_run(run_dir).best()
    assert best is not None
    args = [str(run_dir), "--best", "--epochs", "8"]
    final = run_dir / "final"
    process = subprocess.Popen([sys.executable, "-m", "epnas", "retrain", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 240
    while not (final / "checkpoint.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait()
    assert not (final / "metrics.json").exists(), "finished before it could be killed"
    # The checkpoint is written atomically, so the killed run left a readable one.
    state = torch.load(final / "checkpoint.pt", weights_only=True)
    assert 1 <= state["state"]["epoch"] < 8

    again = retrain(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stdout
    assert again.stdout.count("epoch 1/8") == 0  # no epoch done twice
    assert "epoch 8/8" in again.stdout and "test accuracy" in again.stdout
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["trial"] == best.id and metrics["epochs"] == 8
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 9))
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["input_shape"] == [1, 8, 8] and len(metrics["classes"]) == 10
    assert not (final / "checkpoint.pt").exists()
    assert epnas.load_genome((final / "genome.json").read_text()) == best.genome

    run = epnas.load_run(run_dir)  # the retrained weights are the trial's model now
    assert run.weights(best.id) == final / "model.pt"
    saved = torch.load(final / "model.pt", weights_only=True)
    for key, value in run.build(best.id).state_dict().items():
        assert torch.equal(value, saved[key]), key

    done = retrain(*args)
    assert done.returncode == 0 and "nothing to do" in done.stdout
    other = retrain(str(run_dir), "--epochs", "3")
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert other.stderr.startswith("epnas: error:") and "epochs: 8 there vs 3 here" in \
        other.stderr and "--force-new" in other.stderr


def test_retrain_without_feasible_trial_or_with_unknown_trial_is_a_user_error(
        tiny_run: Path) -> None:
    missing = retrain(str(tiny_run), "--trial", "99")
    assert missing.returncode == 2 and "no trial 99" in missing.stderr
    assert "Traceback" not in missing.stderr
