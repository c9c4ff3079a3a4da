"""epnas.load_run on a real run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import epnas
from epnas.runs import trial_weights_path
from epnas.store import Store


def test_load_run_reads_trials_config_and_best(tiny_run: Path) -> None:
    run = epnas.load_run(tiny_run)
    with Store(tiny_run, readonly=True) as store:
        stored = store.trials()
    assert [t.id for t in run.trials] == [t.id for t in stored] == [1, 2, 3, 4]
    assert run.config.strategy == "random" and run.config.max_params == 20_000
    assert run.dataset == "digits" and run.input_shape == (1, 8, 8) and run.num_classes == 10
    feasible = [t for t in stored if t.status == "done" and t.feasible]
    best = run.best()
    if feasible:
        assert best is not None and best.reward == max(t.reward for t in feasible)
    else:
        assert best is None
    anyway = run.best(feasible=False)
    assert anyway is not None
    assert anyway.reward == max(t.reward for t in stored if t.status == "done")
    assert run.genome(2) == stored[1].genome


def test_build_has_the_run_shapes_and_loads_saved_weights(tiny_run: Path,
                                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = epnas.load_run(run_dir)
    x = torch.randn(2, 1, 8, 8)
    fresh = run.build(3, weights=False)
    assert fresh(x).shape == (2, 10) and not fresh.training
    # A search that keeps weights stores each trial's state_dict under trials/<id>/.
    state = {k: torch.full_like(v, 0.01) if v.is_floating_point() else v
             for k, v in fresh.state_dict().items()}
    path = trial_weights_path(run_dir, 3)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    assert run.weights(3) == path
    loaded = run.build(3)
    expected = torch.load(path, weights_only=True)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_to_pandas_has_one_row_per_trial(tiny_run: Path) -> None:
    pytest.importorskip("pandas")
    frame = epnas.load_run(tiny_run).trials.to_pandas()
    assert list(frame.index) == [1, 2, 3, 4]
    assert {"status", "accuracy", "params", "reward", "feasible"} <= set(frame.columns)


def test_unknown_trial_and_missing_run_are_user_errors(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(epnas.EpnasError, match="no trial 99"):
        epnas.load_run(tiny_run).genome(99)
    with pytest.raises(epnas.EpnasError, match="holds no study"):
        epnas.load_run(tmp_path)
