"""Searching a supernet under an ``avg_flops`` constraint: the evaluator learns the study's
cap, every strategy runs, and an ``avg_flops`` filter is refused up front where the
evaluator cannot price it."""

from __future__ import annotations

from pathlib import Path

import pytest

from epnas.cli import main
from epnas.study import Study
from tests.supernet.conftest import TINY

CAP = 20_000.0


@pytest.mark.parametrize("strategy", [
    "random", "evolution", "random+filter",
    pytest.param("epnas", marks=pytest.mark.slow),  # its policy: about 7 s on a busy machine
])
def test_search_under_an_avg_flops_cap(supernet_dir: Path, strategy: str) -> None:
    study = Study(space="multistage", space_options=TINY, strategy=strategy,
                  evaluator="supernet", evaluator_options={"path": str(supernet_dir),
                                                           "device": "cpu"},
                  constraints=[f"avg_flops::{CAP:g}"], trials=5, seed=1)
    assert study.evaluator.cap == CAP  # the study's constraint reached the evaluator
    summary = study.run()
    trials = [t for t in study.trials() if t.status == "done"]
    assert len(trials) == 5
    for trial in trials:  # thresholds meet the cap wherever the first exit does
        if trial.metrics["exit0_flops"] <= CAP:
            assert trial.metrics["avg_flops"] <= CAP
            assert trial.feasible
    assert summary.best is not None
    if strategy.endswith("+filter"):  # no candidate whose first exit is over the cap
        assert all(t.metrics["exit0_flops"] <= CAP for t in trials)


def test_an_avg_flops_filter_needs_an_evaluator_that_prices_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["search", "--space", "layerwise", "--evaluator", "synthetic", "--filter",
                 "max-avg_flops=20k", "--trials", "2", "--out", str(out)]) == 2
    assert "costs have no 'avg_flops'" in capsys.readouterr().err
    assert not out.exists()


def test_a_space_other_than_the_supernets_is_refused_before_the_run(
        supernet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["search", "--space", "multistage", "--evaluator", "supernet", "--evaluator-opt",
            f"path={supernet_dir}", "--trials", "2", "--out", str(out)]
    assert main(argv) == 2  # the default multistage options are not the supernet's
    error = capsys.readouterr().err
    assert "give --space multistage --space-opt stages=2 --space-opt widths=8,8" in error
    assert not out.exists()
    flags = error.strip().split("give ", 1)[1].split()  # the advice, taken as written
    assert main(["search", *flags, *argv[3:], "--strategy", "random"]) == 0
    assert out.exists()
    assert main(["search", "--space", "layerwise", *argv[3:]]) == 2
    assert "rates the multistage space it was trained for" in capsys.readouterr().err
