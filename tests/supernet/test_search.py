"""Searching a supernet under an ``avg_flops`` constraint: the evaluator learns the study's
cap, every strategy runs, and an ``avg_flops`` filter is refused up front where the
evaluator cannot price it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from epnas.cli import main
from epnas.spaces.multistage import MultistageOptions
from epnas.study import Study
from tests.supernet.conftest import TINY

CAP = 20_000.0


@pytest.mark.parametrize("strategy", [
    "random", "evolution", "random+filter", "reinforce",
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


def test_options_other_than_the_supernets_are_refused_before_the_run(
        supernet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["search", "--space", "multistage", "--space-opt", "kernels=3,5,7", "--evaluator",
            "supernet", "--evaluator-opt", f"path={supernet_dir}", "--trials", "2",
            "--out", str(out)]
    assert main(argv) == 2  # the other options are the space's defaults, not the supernet's
    error = capsys.readouterr().err
    assert "give --space multistage --space-opt stages=2 --space-opt widths=8,8" in error
    assert "--space-opt kernels=3,5 " in error
    assert not out.exists()
    flags = error.strip().split("give ", 1)[1].split(" (or")[0].split()  # the advice as written
    assert main(["search", *flags, *argv[5:], "--strategy", "random", "--quiet"]) == 0
    assert out.exists()
    assert main(["search", "--space", "layerwise", *argv[5:]]) == 2
    assert "rates the multistage space it was trained for" in capsys.readouterr().err


@pytest.mark.parametrize("space", [None, "multistage"])
def test_a_study_given_no_space_options_searches_the_supernets_space(
        supernet_dir: Path, space: str | None) -> None:
    study = Study(space=space, strategy="random", evaluator="supernet",
                  evaluator_options={"path": str(supernet_dir), "device": "cpu"}, trials=1)
    assert study.config.space == "multistage"
    assert study.space.options == MultistageOptions(**TINY)
    assert study.run().best is not None


def test_the_search_command_records_the_supernets_space_and_a_run_resumes_anywhere(
        supernet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No --space: the supernet's space and options, shown and recorded; its path given
    relative to where the search started is recorded absolute."""
    shutil.copytree(supernet_dir, tmp_path / "supernet")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--evaluator", "supernet", "--evaluator-opt", "path=supernet",
                 "--evaluator-opt", "device=cpu", "--strategy", "random", "--trials", "2",
                 "--out", "run", "--quiet"]) == 0
    header = capsys.readouterr().out
    assert "searching multistage with random" in header
    assert "space multistage as the supernet evaluator rates it: stages=2 widths=8,8" in header
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["space"] == "multistage"
    assert MultistageOptions(**config["space_options"]) == MultistageOptions(**TINY)
    assert config["evaluator_options"]["path"] == str(tmp_path / "supernet")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["resume", str(tmp_path / "run"), "--trials", "3", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["counts"] == {
        "done": 3}
