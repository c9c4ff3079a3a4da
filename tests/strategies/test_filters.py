"""EEEA early exit: over-limit candidates are replaced before they are ever evaluated."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas import EpnasError, strategies
from epnas.cli import main
from epnas.evaluators import SyntheticEvaluator, TabularEvaluator, tabular
from epnas.objective import Objective
from epnas.strategies.filters import EarlyExit, Limit
from epnas.study import Study
from epnas.testing import checkpoint, drive
from epnas.trial import Candidate, Result


@pytest.fixture(scope="module")
def table() -> Path:
    try:
        return tabular.default_path()
    except EpnasError as exc:
        pytest.skip(f"needs the NAS-Bench-201 table: {exc}")


def median_params(space: epnas.Space, shape: tuple[int, int, int]) -> float:
    rng = np.random.default_rng(0)
    return float(np.median([epnas.cost(space.sample(rng), shape, 10).params
                            for _ in range(101)]))


class Recording(TabularEvaluator):
    """The table, remembering every genome it was asked to evaluate."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.seen: list[epnas.Genome] = []

    def evaluate(self, candidate: Candidate) -> Result:
        self.seen.append(candidate.genome)
        return super().evaluate(candidate)


@pytest.mark.parametrize(("text", "limit"), [
    ("max-params=300k", Limit("params", 300e3)),
    ("min-intensity=8", Limit("intensity", 8, upper=False)),
    ("max_mflops=20", Limit("mflops", 20)),
    ("max-memory=2G", Limit("memory", 2e9)),
])
def test_limits_parse(text: str, limit: Limit) -> None:
    assert Limit.parse(text) == limit
    assert Limit.parse(str(limit)) == limit


def test_limits_judge_costs() -> None:
    costs = {"params": 1000.0, "flops": 30e6, "intensity": 4.0}
    assert Limit("params", 1000).allows(costs) and not Limit("params", 999).allows(costs)
    assert not Limit("mflops", 20).allows(costs)
    assert Limit("intensity", 4, upper=False).allows(costs)
    assert not Limit("intensity", 5, upper=False).allows(costs)


@pytest.mark.parametrize("text", ["max-accuracy=0.9", "params<=3", "max-params=lots"])
def test_bad_limit_is_named(text: str) -> None:
    with pytest.raises(EpnasError, match=r"filter|size|cannot"):
        Limit.parse(text)


@pytest.mark.parametrize("name", [n for n in strategies.names()
                                  if strategies.STRATEGIES.resolve(n)[1].supports(
                                      epnas.spaces.get("nb201"))])
def test_never_evaluates_an_over_limit_candidate(name: str, table: Path) -> None:
    cap = 200e3  # rejects every cell with a 3x3 conv, also the one-edge ones PNAS starts with
    evaluator = Recording(table)
    study = Study(space="nb201", strategy=name, evaluator=evaluator, trials=16, out=None,
                  filters=[f"max-params={cap}"])
    summary = study.run()
    assert isinstance(study.strategy, EarlyExit)
    assert evaluator.seen, "nothing was evaluated"
    assert all(epnas.cost(g).params <= cap for g in evaluator.seen)
    assert all(t.metrics["params"] <= cap for t in study.trials())
    assert summary.skipped == study.strategy.skipped > 0
    assert summary.to_dict()["skipped"] == summary.skipped


def test_evolution_population_holds_no_rejected_genome() -> None:
    space = epnas.spaces.get("layerwise")
    evaluator = SyntheticEvaluator()
    cap = median_params(space, evaluator.input_shape)
    inner = strategies.get("evolution", space, seed=2, population=6, sample=3)
    strategy = EarlyExit(inner, evaluator.costs, [f"max-params={cap}"])
    run = drive(strategy, evaluator, Objective(), n_trials=30)
    assert strategy.skipped > 0 and len(run.candidates) == 30
    assert [c.info["origin"] for c in run.candidates[:6]] == ["random"] * 6
    for member in inner.state_dict()["population"]:
        assert epnas.cost(epnas.load_genome(member["json"]), evaluator.input_shape).params <= cap


def test_filter_state_resumes(table: Path) -> None:
    evaluator = TabularEvaluator(table)
    cap = median_params(epnas.spaces.get("nb201"), (3, 32, 32))

    def make() -> EarlyExit:
        return EarlyExit(strategies.get("evolution", "nb201", seed=4, population=8, sample=3),
                         evaluator.costs, [f"max-params={cap}"])

    original = make()
    drive(original, evaluator, Objective(), n_trials=12)
    state = checkpoint(original)
    rest = drive(original, evaluator, Objective(), n_trials=12)
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.skipped == state["skipped"] > 0
    assert drive(resumed, evaluator, Objective(), n_trials=12).asks == rest.asks
    assert resumed.skipped == original.skipped


def test_a_filter_nothing_passes_stops_with_a_message() -> None:
    strategy = EarlyExit(strategies.get("random", "nb201"), lambda g: {"params": 1e9},
                         ["max-params=1"])
    with pytest.raises(EpnasError, match="loosen"):
        strategy.ask()


def epnas_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "epnas", *args], cwd=cwd,
                          env={**os.environ, "CI": "true"}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


@pytest.mark.slow  # four CLI processes: over a minute on a loaded 2-core machine
def test_cli_filter_search_status_and_resume(table: Path, tmp_path: Path) -> None:
    cap = median_params(epnas.spaces.get("nb201"), (3, 32, 32))
    done = epnas_cli("search", "--space", "nb201", "--strategy", "evolution", "--data",
                     str(table), "--filter", f"max-params={cap / 1e3:.3f}k", "--trials", "25",
                     "--out", "run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["skipped"]
    assert first > 0
    done = epnas_cli("resume", "run", "--trials", "40", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "candidates skipped by the filters" in done.stdout
    with (tmp_path / "run" / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and all(float(r["params"]) <= cap for r in rows)
    status = epnas_cli("status", "run", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    skipped = int(status.stdout.split("filters ")[1].split(": ")[1].split()[0])
    assert skipped > first


def test_cli_bad_filter_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--space", "nb201", "--filter", "max-speed=3", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("epnas: error:") and len(err.strip().splitlines()) == 1
    assert "max-speed" in err and not (tmp_path / "x").exists()


def test_the_filter_names_the_wrapped_strategys_fidelities() -> None:
    # the study checks every fidelity with its evaluator before the run: a wrapped
    # EcoNAS must still show its levels
    econas = strategies.get("econas", "nb201", seed=0)
    wrapped = EarlyExit(econas, lambda g: {"params": 0.0}, ["max-params=1M"])
    assert econas.fidelities and wrapped.fidelities == econas.fidelities
