"""The parameter-sharing dictionary in a study: per-trial weights, per-step merge, resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import epnas
from epnas.evaluators.training import TrainingEvaluator
from epnas.executors import InlineExecutor
from epnas.strategies.epnas import EPNAS
from epnas.strategies.random import RandomSearch
from epnas.study import Study
from epnas.train.sharing import ACCURACY, MAX_SHAPES, WeightDictionary
from tests.study.test_resume import finished, rows, start, wait_for

ROOT = Path(__file__).resolve().parents[2]
SPACE_OPTIONS = {"max_layers": 4, "channels": [16, 32]}
# A few real SGD steps on digits: accuracies differ between trials, trainings take ~1 s.
SCHEDULE = {"epochs": 1, "warmup_epochs": 0, "batch_size": 256}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))


class Steps(RandomSearch):
    """Random search that asks one step of ``workers`` candidates at a time."""

    lookahead = 1


class PacedTraining(TrainingEvaluator):
    """The training evaluator with a pause before each training, so that a kill test finds
    a trial running on any machine (these tiny trainings can take well under 0.1 s) and
    a run lasts past the first strategy checkpoint (``CHECKPOINT_INTERVAL``, 2 s)."""

    def evaluate_trial(self, candidate, context):
        time.sleep(0.8)
        return super().evaluate_trial(candidate, context)


class StepwiseEPNAS(EPNAS):
    """EPNAS whose batches are ``workers`` candidates (a step of 2 branches with 2 workers),
    so that short runs have several batches and checkpoints."""

    lookahead = 1


def study(out: Path | None, *, share: bool = True, trials: int = 4, workers: int = 2,
          strategy: str = "tests.study.test_sharing:Steps", force_new: bool = False,
          **options) -> Study:
    """A search on digits; ``workers`` trials per step, evaluated inline."""
    evaluator = TrainingEvaluator("digits", schedule=SCHEDULE, share=share)
    return Study(space="layerwise", space_options=SPACE_OPTIONS, strategy=strategy,
                 strategy_options=options, evaluator=evaluator,
                 executor=InlineExecutor(evaluator, workers), trials=trials, out=out,
                 force_new=force_new)


def units_of(evaluator: TrainingEvaluator, trial: epnas.TrialRecord, run: Path) -> dict:
    units = evaluator.shared_units(trial.candidate, run / "trials" / str(trial.id))
    assert units is not None
    return units


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in state.items()}


def test_every_trial_saves_its_weights_and_each_step_is_merged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with study(run, trials=4) as s:
        s.run()
        trials = s.trials()
    assert [t.status for t in trials] == ["done"] * 4
    evaluator = TrainingEvaluator("digits")
    for t in trials:  # model.pt is the state_dict of epnas.build(genome, shape, classes)
        model = epnas.build(t.genome, (1, 8, 8), 10)
        model.load_state_dict(torch.load(run / "trials" / str(t.id) / "model.pt",
                                         weights_only=True))
    # the first step starts from scratch, later ones from the dictionary
    assert all("warm_start" not in t.metrics for t in trials if t.batch == 0)
    assert all(t.metrics["warm_start"] > 0 for t in trials if t.batch > 0)
    # one snapshot: the last step's (only a checkpoint's and the newest are kept)
    assert [p.name for p in (run / "weights").iterdir()] == ["step-000001.pt"]
    weights = WeightDictionary.load(run / "weights" / "step-000001.pt")
    # per step, each key takes the weights of the step's most accurate trial that has it,
    # replacing the stored ones of the same shapes (newest first) unless those came from
    # a more accurate trial; each entry records its trial's accuracy
    expected: dict[str, list[tuple[float, dict]]] = {}
    for batch in range(2):
        step = sorted((t for t in trials if t.batch == batch),
                      key=lambda t: -t.metrics["accuracy"])
        winners: dict[str, tuple[float, dict]] = {}
        for t in step:
            for key, state in units_of(evaluator, t, run).items():
                winners.setdefault(key, (t.metrics["accuracy"], state))
        for key, (accuracy, state) in winners.items():
            stored = expected.get(key, [])
            same = [e for e in stored if shapes(e[1]) == shapes(state)]
            if same and same[0][0] > accuracy:
                continue
            kept = [e for e in stored if shapes(e[1]) != shapes(state)]
            expected[key] = [(accuracy, state), *kept][:MAX_SHAPES]
    assert weights.entries.keys() == expected.keys()
    for key, entries in weights.entries.items():
        assert [float(e.pop(ACCURACY)) for e in entries] == [a for a, _ in expected[key]], key
        assert [shapes(e) for e in entries] == [shapes(s) for _, s in expected[key]], key
        for entry, (_, state) in zip(entries, expected[key]):
            assert all(torch.equal(entry[n], v) for n, v in state.items()), key
    # the stem is in every network, always of one shape: it holds the most accurate
    # trial's weights (the later one of equals)
    best = max(trials, key=lambda t: (t.metrics["accuracy"], t.batch))
    stem = units_of(evaluator, best, run)["stem"]
    assert all(torch.equal(weights.entries["stem"][0][n], v) for n, v in stem.items())


def test_sharing_off_trains_as_before_and_still_saves_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with study(run, trials=2) as s:
        s.run()
    with study(run, share=False, trials=2, force_new=True) as s:  # over the shared run
        s.run()
        trials = s.trials()
    (old,) = run.glob("replaced-*")  # the old run's files moved aside, weights included
    assert sorted(p.name for p in (old / "trials").iterdir()) == ["1", "2"]
    assert (old / "weights" / "step-000000.pt").is_file()
    assert not (run / "weights").exists()
    assert sorted(p.name for p in (run / "trials").iterdir()) == ["1", "2"]
    plain = TrainingEvaluator("digits", schedule=SCHEDULE)
    for t in trials:
        assert (run / "trials" / str(t.id) / "model.pt").is_file()
        assert "warm_start" not in t.metrics
    last = trials[-1]  # trained after another trial: from scratch all the same
    assert last.metrics["accuracy"] == plain.evaluate(last.candidate).metrics["accuracy"]


def test_an_in_memory_study_shares_in_memory_and_leaves_no_files(tmp_path: Path) -> None:
    s = study(None, trials=4)
    scratch = s._files.root  # the temporary directory of its trial files
    with s:
        s.run()
        assert [p.name for p in (scratch / "weights").iterdir()] == ["step-000001.pt"]
        warm = [t.metrics.get("warm_start") for t in s.trials()]
    assert warm[:2] == [None, None] and all(w > 0 for w in warm[2:])
    assert not scratch.exists()


def test_a_cached_trial_links_its_source_trials_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with study(run, trials=3, workers=1, strategy="tests.study.helpers:Repeat",
               distinct=1) as s:
        s.run()
        trials = s.trials()
    assert [t.status for t in trials] == ["done", "cached", "cached"]
    for t in trials[1:]:
        source = run / "trials" / str(t.source) / "model.pt"
        assert os.path.samefile(run / "trials" / str(t.id) / "model.pt", source)


def search_command(out: Path, config: Path, trials: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "epnas", "search", "--config", str(config),
            "--trials", str(trials), "--workers", str(workers), "--out", str(out), "--quiet"]


def write_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "space": "layerwise", "space_options": SPACE_OPTIONS,
        "strategy": "tests.study.test_sharing:StepwiseEPNAS",
        "strategy_options": {"branches": 2, "steps": 3, "episodes": 20},
        "evaluator": "tests.study.test_sharing:PacedTraining", "dataset": "digits",
        "evaluator_options": {"schedule": SCHEDULE}, "constraints": ["params::100k"],
        # bit-for-bit comparable parallel runs: no trial gets an idle worker's threads
        "elastic_threads": False}))
    return path


def outcome(out: Path) -> tuple[list[tuple], WeightDictionary]:
    """(id, key, status, accuracy, warm_start) per trial, and the last snapshot."""
    db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
    try:
        found = db.execute("SELECT id, key, status, json_extract(metrics, '$.accuracy'), "
                           "json_extract(metrics, '$.warm_start') FROM trials ORDER BY id")
        trials = found.fetchall()
    finally:
        db.close()
    (snapshot,) = sorted((out / "weights").glob("step-*.pt"))[-1:]
    return trials, WeightDictionary.load(snapshot)


def checkpointed(out: Path) -> bool:
    db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM checkpoint").fetchone()[0] > 0
    finally:
        db.close()


def same_dictionary(a: WeightDictionary, b: WeightDictionary) -> bool:
    return a.entries.keys() == b.entries.keys() and all(
        len(a.entries[k]) == len(b.entries[k]) and all(
            x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x)
            for x, y in zip(a.entries[k], b.entries[k]))
        for k in a.entries)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_mid_search_resumes_with_a_consistent_dictionary(tmp_path: Path,
                                                                 workers: int) -> None:
    """Trials after the kill warm-start from the same weights as in an uninterrupted run:
    their accuracies, and the final dictionary, are identical bit for bit."""
    config = write_config(tmp_path / "search.yaml")
    env = {**os.environ, "EPNAS_CACHE": str(tmp_path / "cache")}
    reference = tmp_path / "reference"
    done = subprocess.run(search_command(reference, config, 12, workers), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "run"
    args = search_command(out, config, 12, workers)
    for moment in (3, 7):
        proc = start(args)  # inherits EPNAS_CACHE from the autouse fixture
        # mid-training, after a checkpoint: the killed trials must warm-start again
        # from the checkpoint's snapshot
        wait_for(proc, lambda m=moment: len(finished(out)) >= m and checkpointed(out)
                 and any(r[3] == "running" for r in rows(out)), timeout=300)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr

    trials, weights = outcome(out)
    expected_rows, expected_weights = outcome(reference)
    assert trials == expected_rows
    assert any(r[4] is not None for r in trials[6:])  # later trials were warm-started
    assert same_dictionary(weights, expected_weights)
    for r in trials:
        if r[2] == "done":
            assert (out / "trials" / str(r[0]) / "model.pt").is_file()
