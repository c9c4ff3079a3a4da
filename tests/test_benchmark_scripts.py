"""The benchmark scripts' smoke configurations run end to end (their figures are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["epnas", "epnas[lr=0]", "evolution", "random+filter"]


@pytest.mark.slow  # a 4-search benchmark run in a subprocess (7 s)
def test_constrained_search_smoke(tmp_path: Path) -> None:
    # digits is bundled, so this runs anywhere; 2 seeds so that Welch's t is defined
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "constrained_search.py"), "--smoke",
         "--dataset", "digits", "--seeds", "2", "--json", str(out),
         "--cache", str(tmp_path / "medium")],
        cwd=tmp_path, env={**os.environ, "CI": "true"}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr
    for row in ROWS:  # labels with brackets are printed as written, not eaten as markup
        assert row in done.stdout
    report = json.loads(out.read_text())
    assert report["reference"] == "epnas"
    assert len(report["runs"]) == 2 * len(ROWS) * 2
    assert 0 < report["constraint"]["random_share"] <= 1
    assert report["config"]["time_budget"] > 0
    for comparison in ("trials", "time"):
        result = report["results"][comparison]
        assert [r["strategy"] for r in result["rows"]] == ROWS
        assert all(r["seeds"] == 2 for r in result["rows"])
        assert [v["strategy"] for v in result["versus"]] == ROWS[1:]
    trials = [r for r in report["runs"] if r["comparison"] == "trials"]
    assert all(r["trials"] <= 4 for r in trials)
    # equal time reads the same searches at the shortest one's wall time: a prefix of each
    timed = {(r["strategy"], r["seed"]): r for r in report["runs"] if r["comparison"] == "time"}
    budget = report["config"]["time_budget"]
    assert budget == min(r["wall_seconds"] for r in trials)
    for r in trials:
        t = timed[r["strategy"], r["seed"]]
        assert t["stop_reason"] == "time" and t["wall_seconds"] == budget
        assert t["trials"] <= r["trials"]
        if t["best_feasible"] is not None:
            assert t["best_feasible"] <= r["best_feasible"] + 1e-9
    keys = {r["best_key"] for r in report["runs"] if r["best_key"]}
    assert keys <= set(report["medium"])
    assert all(m["test"] is not None for m in report["medium"].values())


@pytest.mark.slow  # two tiny searches and two retrainings in a subprocess
def test_label_free_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "label_free.py"), "--trials", "2",
         "--max-layers", "2", "--fidelity-items", "e=1", "--retrain-epochs", "1",
         "--first-seed", "1", "--json", str(out), "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env={**os.environ, "CI": "true"}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rotation, labels = report["runs"]  # the label-free search first, then the supervised
    assert rotation["fidelity"].startswith("pretext=rotation")
    assert "pretext" not in labels["fidelity"]
    for run in report["runs"]:
        assert 0 <= run["test_accuracy"] <= 1 and run["best"] and run["seed"] == 1
    assert len(list((tmp_path / "runs").iterdir())) == 2  # --out keeps both searches
    assert report["gaps"] == [pytest.approx(
        100 * (rotation["test_accuracy"] - labels["test_accuracy"]))]


def test_inline_searches_are_reported_as_each_finishes() -> None:
    # --jobs 1 runs every search in this process: each is reported before the next starts
    bench = load_benchmark("constrained_search")
    events: list[str] = []

    def search(n: int) -> dict:
        events.append(f"run {n}")
        return {"n": n}

    results = bench.run_all(bench.Inline(), search, [1, 2],
                            lambda r: events.append(f"report {r['n']}"))
    assert results == [{"n": 1}, {"n": 2}]
    assert events == ["run 1", "report 1", "run 2", "report 2"]
