"""Real run directories for the report tests, made once per session by real searches
(in-process: ``epnas search`` in a subprocess is tested elsewhere), and the report of
one of them written by ``epnas report`` in a subprocess, as a user runs it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from epnas.cli import main
from epnas.spaces.nb201 import NB201_OPS, to_arch

ROOT = Path(__file__).resolve().parents[2]


def epnas_cli(*args: str) -> subprocess.CompletedProcess:
    """``epnas ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "epnas", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def nb201_csv(path: Path) -> Path:
    """A NAS-Bench-201-style table of every cell (made-up accuracies, the real format)."""
    lines = ["arch,test_acc_200ep,val_acc_12ep,test_acc_12ep"]
    for ops in itertools.product(NB201_OPS, repeat=6):
        convs = sum(op.startswith("nor_conv") for op in ops)
        acc = 10 + 14 * convs + sum(map(NB201_OPS.index, ops)) / 10
        lines.append(f"{to_arch(ops)},{acc:.2f},{acc - 5:.2f},{acc - 6:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``epnas``: EPNAS under a params constraint with failures (infeasible proposals
    allowed); ``random``: nothing feasible; ``nb201``: evolution on a table;
    ``cellwise``: a few random cells."""
    root = tmp_path_factory.mktemp("runs")
    found = {name: root / name for name in ("epnas", "random", "nb201", "cellwise")}
    quick = ["--evaluator", "synthetic", "--quiet", "--trials"]
    table = str(nb201_csv(root / "nb201.csv"))
    for name, args in (
            ("epnas", ["--evaluator-opt", "fail_every=7", "--max-params", "60k",
                       "--strategy-opt", "avoid_infeasible=0", *quick, "40"]),
            ("random", ["--strategy", "random", "--max-params", "200", *quick, "12"]),
            ("cellwise", ["--space", "cellwise", "--strategy", "random", *quick, "8"]),
            ("nb201", ["--space", "nb201", "--strategy", "evolution", "--evaluator", "tabular",
                       "--data", table, "--quiet", "--trials", "25"])):
        assert main(["search", *args, "--out", str(found[name])]) == 0
    return found


@pytest.fixture(scope="session")
def report(runs: dict[str, Path]) -> Path:
    """``epnas report`` of the EPNAS run compared with the random one: report.html's path."""
    done = epnas_cli("report", str(runs["epnas"]), "--compare", str(runs["random"]))
    assert done.returncode == 0, done.stderr
    path = runs["epnas"] / "report" / "report.html"
    assert done.stdout.strip() == f"report: {path}"
    return path
