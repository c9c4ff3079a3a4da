"""``epnas benchmark nb201`` end to end, on a synthetic table with the real CSV schema."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from epnas.cli import main
from epnas.spaces.nb201 import NB201_OPS, to_arch

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
        assert set(row) == {"strategy", "queries", "mean", "std", "seeds"}
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
