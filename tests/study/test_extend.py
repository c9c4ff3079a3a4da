"""``epnas resume RUN --trials N`` extends any run, a finished strategy included, and
``epnas status`` advertises only a budget the run can use (issue 16, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from epnas.cli import main
from epnas.store import Store
from epnas.study import Study

# a fixed EPNAS schedule: the start networks, then 2 episodes of 1 step x 2 branches = 6
FIXED = ["--strategy", "epnas", "--strategy-opt", "episodes=2", "--strategy-opt",
         "branches=2", "--strategy-opt", "steps=1", "--evaluator", "synthetic",
         "--space", "nb201"]


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def count(run: Path) -> dict[str, int]:
    with Store(run, readonly=True) as store:
        return store.counts()


def test_resume_with_more_trials_extends_a_finished_epnas_schedule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(tmp_path / "run")
    code, out = cli("search", *FIXED, "--trials", "100", "--out", run, "--quiet",
                    capsys=capsys)
    assert code == 0, out
    assert "6 trials: the epnas strategy's own schedule" in out
    assert sum(count(tmp_path / "run").values()) == 6
    code, out = cli("status", run, capsys=capsys)
    assert "budget left: none, the epnas strategy's own schedule is over (`epnas resume" in out
    assert "94 trials" not in out

    # a plain resume (the same budget) changes nothing: a killed run resumes as it was
    code, out = cli("resume", run, "--quiet", capsys=capsys)
    assert code == 0 and sum(count(tmp_path / "run").values()) == 6, out

    code, out = cli("resume", run, "--trials", "12", "--quiet", capsys=capsys)
    assert code == 0, out
    assert "(12 trials, " in out
    assert sum(count(tmp_path / "run").values()) == 12
    code, out = cli("status", run, capsys=capsys)
    assert "budget left: 0 trials" in out

    # the extension is part of the run: resumed again, its restored strategy keeps it
    code, out = cli("resume", run, "--trials", "14", "--quiet", capsys=capsys)
    assert code == 0 and sum(count(tmp_path / "run").values()) == 14, out


def test_optimize_with_more_trials_extends_the_schedule(tmp_path: Path) -> None:
    options = {"episodes": 2, "branches": 2, "steps": 1}
    with Study(space="nb201", strategy="epnas", strategy_options=options,
               evaluator="synthetic", trials=100, out=str(tmp_path / "run")) as study:
        assert study.run().trials == 6 and study.stop_reason == "strategy"
        assert study.optimize(trials=10).trials == 10


def test_status_of_a_strategy_that_cannot_ask_more(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(tmp_path / "run")
    code, out = cli("search", "--strategy", "tests.study.helpers:Finite", "--evaluator",
                    "synthetic", "--trials", "10", "--out", run, "--quiet", capsys=capsys)
    assert code == 0, out
    code, out = cli("status", run, capsys=capsys)
    assert ("budget left: none, the tests.study.helpers:Finite strategy's own schedule is "
            "over (it asks for nothing more)") in out
    code, out = cli("resume", run, "--trials", "20", "--quiet", capsys=capsys)
    assert code == 0 and sum(count(tmp_path / "run").values()) == 4, out
