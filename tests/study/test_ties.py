"""Equal accuracies (common on digits' 144 validation images) are broken by the lower
validation loss, then the earlier trial, everywhere a best trial is chosen."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from epnas.cli import main
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.progress import LineReporter
from epnas.report.data import ranked, read_run
from epnas.rundir import best_genomes
from epnas.runs import load_run
from epnas.study import Study, Summary
from epnas.trial import Candidate, Result

LOSSES = (0.5, 0.2, float("nan"), 0.2, 0.4)  # trial 2 is best; 4 ties with it but is later


class Tied(SyntheticEvaluator):
    """Every trial 100 % accurate; the validation losses of :data:`LOSSES`, in order."""

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        loss = LOSSES[self.queries - 1]
        return Result("done", {**result.metrics, "accuracy": 1.0, "val_loss": loss})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("ties") / "run"
    study = Study(strategy="random", evaluator=f"{__name__}:Tied", trials=len(LOSSES),
                  out=out)
    reporter = LineReporter(study.config, study.summary(), io.StringIO())
    study.progress = reporter.trial
    with study:
        study.run()
    assert reporter.best is not None
    return out, reporter.best.id


def test_the_lower_validation_loss_wins_a_tie_everywhere(run, capsys) -> None:
    out, live_best = run
    assert live_best == 2  # the search's live display
    with Study.from_config(load_run(out).config) as study:
        assert study.best().id == 2  # the summary the search prints
    assert load_run(out).best().id == 2  # what export, predict and retrain choose
    assert ranked(read_run(out), 5)[0].id == 2  # the report's table
    assert best_genomes(out)[0].id == 2  # --init-from
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["best"]["id"] == 2 and [t["id"] for t in status["top"]][:2] == [2, 4]


class Blocks(SyntheticEvaluator):
    """A block trial scores 99 %, the assembled network 50 %."""

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        block = (candidate.fidelity or "").startswith("block=")
        return Result("done", {**result.metrics, "accuracy": 0.99 if block else 0.5})


def dna_run(out: Path, evaluator: str, **settings: object
            ) -> tuple[Summary, LineReporter, list[str]]:
    """A 7-trial DNA search watched by a line reporter: (its summary, the reporter, the
    reporter's lines)."""
    study = Study(strategy="dna", evaluator=f"{__name__}:{evaluator}", trials=7,
                  strategy_options={"per_block": 2}, out=out, **settings)
    stream = io.StringIO()
    reporter = LineReporter(study.config, study.summary(), stream,
                            report_fidelity=study.strategy.report_fidelity)
    study.progress = reporter.trial
    with study:
        study.run()
        summary = study.summary()
    return summary, reporter, stream.getvalue().splitlines()


def test_the_live_best_is_the_strategys_reported_network(tmp_path: Path) -> None:
    # dna's parts are rated on a figure of their own; the run's result is the assembly
    summary, reporter, lines = dna_run(tmp_path / "run", "Blocks")
    best = summary.best
    assert best is not None and best.info["origin"] == "assembled" and best.accuracy == 0.5
    assert reporter.best is not None and reporter.best.id == best.id
    assert "best #" in lines[0] and "99.00%" in lines[0]  # before the assembly: a part
    assert lines[-1].endswith(f"best #{best.id} 50.00%")


class AssemblyOverCap(Blocks):
    """As :class:`Blocks`, but the assembled network reports more parameters than any cap."""

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        if (candidate.fidelity or "").startswith("block="):
            return result
        return Result("done", {**result.metrics, "params": 1e12})


def test_the_live_best_follows_the_summary_when_the_reported_network_is_infeasible(
        tmp_path: Path) -> None:
    summary, reporter, lines = dna_run(tmp_path / "run", "AssemblyOverCap",
                                       constraints=["params::1e9"])
    assert not summary.feasible and summary.best.info["origin"] == "assembled"
    assert "best #" in lines[0]  # a feasible part, before the assembly is known
    assert reporter.best is None and "best #" not in lines[-1]  # as the summary: none
