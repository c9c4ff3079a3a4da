"""``--init-from RUN_DIR``: a new run starts from another run's best genomes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from epnas.cli import main
from epnas.rundir import best_genomes
from epnas.store import Store
from epnas.study import Study

FAST = ["--evaluator", "synthetic", "--quiet", "--max-params", "100k"]


@pytest.fixture
def source(tmp_path: Path, capsys: pytest.CaptureFixture) -> Path:
    out = tmp_path / "source"
    assert main(["search", "--strategy", "random", *FAST, "--trials", "12", "--out",
                 str(out)]) == 0
    capsys.readouterr()
    return out


def keys(run_dir: Path) -> list[tuple[str, dict]]:
    with Store(run_dir, readonly=True) as store:
        return [(t.key, dict(t.info)) for t in store.trials()]


def test_random_and_evolution_ask_the_best_genomes_first(source: Path, tmp_path: Path) -> None:
    ranked = best_genomes(source)
    best = [t.key for t in ranked]
    order = [(not t.feasible, -(t.reward or 0.0)) for t in ranked]
    assert 1 < len(best) <= 8 and len(best) == len(set(best)) and order == sorted(order)
    with Store(source, readonly=True) as store:
        others = [t for t in store.trials() if t.key not in best and t.status == "done"]
    assert all((not t.feasible, -(t.reward or 0.0)) >= order[-1] for t in others)
    for strategy in ("random", "evolution"):
        out = tmp_path / strategy
        assert main(["search", "--strategy", strategy, *FAST, "--trials", str(len(best) + 2),
                     "--init-from", str(source), "--out", str(out)]) == 0
        trials = keys(out)
        assert [k for k, _ in trials[:len(best)]] == best
        assert all(info["origin"] == "seed" for _, info in trials[:len(best)])
        assert all(info.get("origin") != "seed" for _, info in trials[len(best):])


def test_epnas_evaluates_the_seeds_then_transforms_them(source: Path) -> None:
    best = [t.key for t in best_genomes(source)]
    study = Study(strategy="epnas", strategy_options={"branches": 3, "top_k": 3, "explore": 0},
                  evaluator="synthetic", max_params="100k", trials=6, init_from=source)
    with study:
        study.run()
        trials = study.trials()
    assert [t.key for t in trials[:3]] == [best[b % len(best)] for b in range(3)]
    assert {t.info["parent"] for t in trials[3:]} <= set(best[:3])


def test_epnas_without_evaluate_start_transforms_the_seeds_at_once(source: Path) -> None:
    best = [t.key for t in best_genomes(source)]
    study = Study(strategy="epnas", strategy_options={"branches": 3, "steps": 1,
                                                      "evaluate_start": False, "explore": 0},
                  evaluator="synthetic", max_params="100k", trials=3, init_from=source)
    with study:
        study.run()
        parents = [t.info["parent"] for t in study.trials()]
    assert parents == [best[b % len(best)] for b in range(3)]


def test_a_resumed_run_keeps_its_recorded_seeds(source: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    command = ["search", "--strategy", "random", *FAST, "--init-from", str(source), "--out",
               str(out)]
    assert main([*command, "--trials", "3"]) == 0
    capsys.readouterr()
    first = keys(out)
    moved = shutil.move(source, tmp_path / "moved")  # the source run is gone: no matter
    assert main([*command, "--trials", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 5
    assert keys(out)[:3] == first
    assert [k for k, _ in keys(out)][:5] == [t.key for t in best_genomes(moved)][:5]


@pytest.mark.parametrize(("flags", "message"), [
    (["--space", "cellwise"], "cannot seed a search of space 'cellwise'"),
    (["--space-opt", "max_layers=30"], "the space and its options must match"),
    (["--space", "nb201", "--strategy", "reinforce"],
     "strategy reinforce cannot start from given genomes; strategies that can: epnas, "
     "evolution, random"),
])
def test_a_mismatch_is_refused_and_nothing_is_written(
        source: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
        message: str) -> None:
    out = tmp_path / "run"
    args = ["search", "--strategy", "random", *FAST, *flags, "--init-from", str(source),
            "--out", str(out)]
    if "reinforce" in flags:
        args.remove("random")
        args.remove("--strategy")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"epnas: error: --init-from {source}: ") and message in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_init_from_a_directory_without_a_run(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", "--strategy", "random", *FAST, "--init-from", str(tmp_path),
                 "--out", str(out)]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert not out.exists()
