"""``epnas benchmark nb201`` and ``custom`` end to end, on synthetic tables."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import epnas
from epnas.benchmark import RunSpec, Setup, run_benchmark, run_one
from epnas.cli import main
from epnas.evaluators.tabular import TabularEvaluator
from epnas.objective import Objective
from epnas.spaces.nb201 import NB201_OPS, to_arch
from epnas.strategies.filters import constraint_limits
from epnas.trial import Candidate, Result

# the synthetic accuracy of each op, so the optimum (all nor_conv_3x3) is known
OP_VALUE = {"none": 0.0, "skip_connect": 1.0, "avg_pool_3x3": 0.5, "nor_conv_1x1": 2.0,
            "nor_conv_3x3": 3.0}


def write_table(path: Path) -> float:
    """Every NB201 cell with accuracies in percent; returns the optimum."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "test_acc_200ep", "val_acc_12ep", "test_acc_12ep"])
        for i, ops in enumerate(itertools.product(NB201_OPS, repeat=6)):
            score = sum(OP_VALUE[op] for op in ops)
            writer.writerow([to_arch(ops), f"{70 + score:.4f}",
                             f"{40 + score + i % 7 * 0.3:.4f}", f"{45 + score:.4f}"])
    return 70 + 6 * OP_VALUE["nor_conv_3x3"]


ROW_KEYS = {"strategy", "queries", "mean", "std", "se", "t", "seeds", "feasible",
            "optimum_share"}


def epnas_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    return subprocess.run([sys.executable, "-m", "epnas", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    path = tmp_path_factory.mktemp("bench") / "table.csv"
    return path, write_table(path)


@pytest.mark.slow  # worker processes each import torch: ~30 s on a loaded 2-core machine
def test_table_json_and_plot(table: tuple[Path, float], tmp_path: Path) -> None:
    path, optimum = table
    done = epnas_cli("benchmark", "nb201", "--csv", str(path), "--strategies",
                     "random,evolution,econas", "--seeds", "3", "--queries", "30,5",
                     "--workers", "2", "--json", "out.json", "--plot", "regret.png",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("random", "evolution", "econas", "5 queries", "30 queries"):
        assert name in done.stdout
    rows = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [(r["strategy"], r["queries"]) for r in rows] == [
        (s, n) for s in ("random", "evolution", "econas") for n in (5, 30)]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert 70 <= row["mean"] <= optimum and row["std"] >= 0  # percent, as in the CSV
    by = {(r["strategy"], r["queries"]): r for r in rows}
    for name in ("random", "evolution"):
        assert by[name, 5]["seeds"] == by[name, 30]["seeds"] == 3
        assert by[name, 30]["mean"] >= by[name, 5]["mean"]
    # 5 queries buy EcoNAS a few 12-epoch looks and fewer full ones: never more seeds
    assert by["econas", 5]["seeds"] <= 3 and by["econas", 30]["seeds"] == 3
    with Image.open(tmp_path / "regret.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_json_to_stdout_is_pure_json(table: tuple[Path, float], tmp_path: Path) -> None:
    path, _ = table
    done = epnas_cli("benchmark", "nb201", "--csv", str(path), "--strategies", "random",
                     "--seeds", "2", "--queries", "10", "--workers", "1", "--json",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["results"]
    assert [(r["strategy"], r["queries"], r["seeds"]) for r in rows] == [("random", 10, 2)]
    assert set(rows[0]) == ROW_KEYS and rows[0]["t"] is None  # the reference row
    with Image.open(tmp_path / "nb201-regret.png") as image:  # the default plot
        assert image.format == "PNG"


def test_no_plot_writes_no_file(table: tuple[Path, float], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = table
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "nb201", "--csv", str(path), "--strategies", "random",
                 "--seeds", "1", "--queries", "5", "--workers", "1", "--no-plot"]) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--strategies", "no_such"], "no_such"),
    (["--queries", "ten"], "--queries"),
    (["--objective", "train_acc"], "train_acc"),
    (["--seeds", "0"], "--seeds"),
    (["--strategies", "random,evolution[population=1]"], "population"),
    (["--strategies", "random[depth=2"], "unbalanced"),
    (["--strategies", "random+filter"], "+filter needs a constraint"),
    (["--strategies", "random+filter", "--constraint", "latency::0.01"],
     "+filter needs a constraint"),
    (["--strategies", "random", "--reference", "evolution"], "--reference"),
    (["--strategies", "random", "--max-params", "lots"], "max_params"),
])
def test_bad_input_is_one_line(table: tuple[Path, float], args: list[str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = table  # in process: the subprocess path is covered above
    assert main(["benchmark", "nb201", "--csv", str(path), "--seeds", "1", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epnas: error:") and message in lines[0]


def test_a_csv_without_the_proxy_column_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,test_acc_200ep\n" + to_arch(("nor_conv_3x3",) * 6) + ",94.0\n")
    assert main(["benchmark", "nb201", "--csv", str(bad), "--strategies", "random"]) == 2
    assert "val_acc_12ep" in capsys.readouterr().err


# --- specs, constraints, statistics (in process, one worker: each test takes seconds) ---

def bench_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["benchmark", *args, "--workers", "1", "--no-plot", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def by_row(data: dict) -> dict[tuple[str, int], dict]:
    return {(r["strategy"], r["queries"]): r for r in data["results"]}


def test_rows_are_named_by_spec_with_welch_t_and_optimum_share(
        table: tuple[Path, float], capsys: pytest.CaptureFixture[str]) -> None:
    path, optimum = table
    data = bench_json(["nb201", "--csv", str(path), "--strategies",
                       "random, evolution[population=10,sample=3],random[fidelity=12ep]",
                       "--seeds", "4", "--queries", "5,40", "--reference", "random"], capsys)
    rows = by_row(data)
    assert list(dict.fromkeys(s for s, _ in rows)) == [
        "random", "evolution[population=10,sample=3]", "random[fidelity=12ep]"]
    assert data["optimum"] == pytest.approx(optimum) and data["reference"] == "random"
    for row in data["results"]:
        assert set(row) == ROW_KEYS
        assert row["optimum_share"] is not None and 0 <= row["optimum_share"] <= 1
    assert rows["random", 40]["t"] is None  # the reference
    evolution = rows["evolution[population=10,sample=3]", 40]
    assert isinstance(evolution["t"], float) and evolution["seeds"] == 4
    assert evolution["se"] == pytest.approx(evolution["std"] / 2)
    assert evolution["feasible"] == 1.0  # no constraints: every result is feasible
    # only 12-epoch queries: nothing is ever found at full fidelity
    proxy = rows["random[fidelity=12ep]", 40]
    assert proxy["mean"] is None and proxy["seeds"] == 0 and proxy["optimum_share"] == 0


def test_constraints_report_the_best_feasible(table: tuple[Path, float],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, optimum = table
    common = ["nb201", "--csv", str(path), "--strategies", "random,evolution",
              "--seeds", "3", "--queries", "30"]
    free = bench_json(common, capsys)
    capped = bench_json([*common, "--max-params", "320k"], capsys)
    assert capped["constraints"] == ["params::320000:0.9"]
    assert capped["optimum"] < free["optimum"] == pytest.approx(optimum)
    for row in capped["results"]:
        assert 0 <= row["feasible"] <= 1
        assert row["mean"] <= capped["optimum"] + 1e-9  # never above the feasible optimum
    assert by_row(capped) != by_row(free)
    # no cell has a single parameter: every seed counts as the table's worst accuracy
    none = bench_json([*common, "--constraint", "params::1"], capsys)
    assert none["optimum"] is None and none["minimum"] == pytest.approx(70.0)
    for row in none["results"]:
        assert row["feasible"] == 0 and row["mean"] == pytest.approx(70.0)
        assert row["std"] == 0 and row["optimum_share"] is None


def test_filter_makes_every_query_feasible(table: tuple[Path, float]) -> None:
    path, _ = table
    objective = Objective.of(["params::320k"])
    evaluator = Recording(path)
    space = epnas.spaces.get("nb201")
    spec = RunSpec("evolution+filter", "evolution", {}, tuple(constraint_limits(objective)),
                   seed=0, budget=40, setup=Setup(), objective=objective)
    run = run_one(spec, space, evaluator)
    assert len(evaluator.params) >= 40 and max(evaluator.params) <= 320_000
    assert not np.isnan(run.best[-1])  # its best is feasible
    plain = RunSpec("evolution", "evolution", {}, (), 0, 40, Setup(), objective)
    evaluator.params.clear()
    run_one(plain, space, evaluator)
    assert max(evaluator.params) > 320_000  # without the filter it does query over the cap


def test_filter_rows_under_a_cap(table: tuple[Path, float]) -> None:
    path, _ = table
    bench = run_benchmark(["random", "random+filter"], [20], 3, objective=["params::110k"],
                          evaluator_options={"data": str(path)}, workers=1)
    rows = {r["strategy"]: r for r in bench.rows()}
    assert rows["random+filter"]["feasible"] == 1.0
    assert rows["random+filter"]["mean"] >= rows["random"]["mean"]


MODULE = '''
import csv

from epnas.evaluators.base import Evaluator
from epnas.spaces.registry import get as get_space
from epnas.strategies.random import RandomSearch
from epnas.trial import Result

OPS = ["none", "skip_connect", "nor_conv_3x3"]


class MiniTable(Evaluator):
    """A user's table over nb201 cells of three ops: arch,acc (percent)."""

    def __init__(self, data, enumerable=True):
        self.space = get_space("nb201", ops=OPS)
        with open(data, newline="") as handle:
            self.acc = {row["arch"]: float(row["acc"]) / 100 for row in csv.DictReader(handle)}
        self.enumerable = enumerable

    def evaluate(self, candidate):
        acc = self.acc.get(candidate.genome.arch)
        if acc is None:
            return Result.failure("error", "not in the table")
        return Result("done", {"accuracy": acc, **self.costs(candidate.genome)})

    def entries(self):
        if not self.enumerable:
            return None
        return [(self.space.from_arch(arch), acc) for arch, acc in self.acc.items()]


class Attached(RandomSearch):
    """Random search that refuses to run unless the benchmark attached its context."""

    def ask(self):
        assert self.context.trials in (5, 25) and self.context.costs is not None
        return super().ask()
'''


@pytest.fixture
def user_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "bench_user_table.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ops = ("none", "skip_connect", "nor_conv_3x3")
    with (tmp_path / "mini.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "acc"])
        for cell in itertools.product(ops, repeat=6):
            writer.writerow([to_arch(cell), f"{50 + sum(map(ops.index, cell)) * 2.5:.1f}"])
    return tmp_path / "mini.csv"


def test_custom_space_and_evaluator(user_table: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["custom", "--space", "nb201", "--space-opt", "ops=none,skip_connect,nor_conv_3x3",
            "--evaluator", "bench_user_table:MiniTable", "--evaluator-opt",
            f"data={user_table}", "--strategies",
            "bench_user_table:Attached,evolution[population=8],bench_user_table:Attached[depth=6]",
            "--seeds", "3", "--queries", "10,25"]
    data = bench_json(args, capsys)
    assert data["optimum"] == pytest.approx(80.0) and data["minimum"] == 50.0
    rows = by_row(data)
    assert set(s for s, _ in rows) == {"bench_user_table:Attached", "evolution[population=8]",
                                       "bench_user_table:Attached[depth=6]"}
    for row in data["results"]:
        assert set(row) == ROW_KEYS and 50 <= row["mean"] <= 80
        assert 0 <= row["optimum_share"] <= 1
    # an evaluator that cannot enumerate its table: no optimum, the table says n/a
    data = bench_json([*args, "--evaluator-opt", "enumerable=false", "--max-params", "200k"],
                      capsys)
    assert data["optimum"] is None
    assert all(row["optimum_share"] is None for row in data["results"])
    assert main(["benchmark", *args[:-4], "--seeds", "2", "--queries", "5", "--workers", "1",
                 "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "n/a" not in out and "5 queries" in out
    assert "evolution[population=8]" in out and "bench_user_table:Attached[depth=6]" in out


def test_custom_table_without_optimum_says_na(user_table: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "custom", "--space", "nb201", "--space-opt",
                 "ops=none,skip_connect,nor_conv_3x3", "--evaluator",
                 "bench_user_table:MiniTable", "--evaluator-opt", f"data={user_table}",
                 "--evaluator-opt", "enumerable=false", "--strategies", "random",
                 "--seeds", "2", "--queries", "5", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimum n/a" in out and "n/a" in out.split("5 queries")[1]
    with Image.open(user_table.parent / "nb201-regret.png") as image:  # regret to the best
        assert image.format == "PNG"


class Recording(TabularEvaluator):
    """The tabular evaluator, remembering the parameters of every query."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.params: list[float] = []

    def evaluate(self, candidate: Candidate) -> Result:
        self.params.append(self.costs(candidate.genome)["params"])
        return super().evaluate(candidate)
