"""A supernet search's best network fine-tuned by ``epnas retrain`` (from its sliced
weights, every exit trained) and shown by ``epnas report`` (accuracy vs average FLOPs,
each exit's share)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from epnas import load_genome
from epnas.data import Dataset
from epnas.report.data import exit_profile, ranked, read_run
from epnas.report.html import write_report
from epnas.retrain import plan
from epnas.runs import load_run
from epnas.study import Study
from epnas.supernet import SupernetTraining
from epnas.supernet.training import exit_logits
from tests.conftest import load_benchmark
from tests.supernet.conftest import TINY, save_tiny, subset


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Path:
    """A search of a briefly trained tiny digits supernet (its largest phase only)."""
    root = tmp_path_factory.mktemp("searched")
    torch.set_num_threads(1)
    SupernetTraining(root / "supernet", subset(digits, 600, 144), space_options=TINY,
                     options={"epochs_per_phase": (3, 0, 0, 0), "batch_size": 64},
                     device="cpu").run()
    Study(space="multistage", space_options=TINY, strategy="random", evaluator="supernet",
          evaluator_options={"path": str(root / "supernet"), "device": "cpu"}, trials=3,
          seed=0, out=str(root / "run")).run()
    return root / "run"


def test_retrain_fine_tunes_the_sliced_network_at_every_exit(searched: Path) -> None:
    run = load_run(searched)
    sliced = run.build()  # the trial's weights: sliced from the supernet, recalibrated
    data = run.data
    start = exit_logits(sliced, data.test_x, data).argmax(-1) == data.test_y[None]
    start = start.float().mean(1)
    assert float(start[-1]) > 0.3  # the supernet taught it: far from chance (0.1)
    job = plan(run, epochs=1, schedule={"lr": 1e-4, "batch_size": 64})
    assert job.warm == searched / "trials" / str(run.best().id) / "model.pt"
    metrics = job.fit(device="cpu")
    # a tiny step from the sliced weights: where the sliced network was, not chance
    assert abs(metrics["test_accuracy"] - float(start[-1])) < 0.1
    # the same network (the trainer's channels-last pass may flip a borderline image)
    assert metrics["exit_accuracy"][-1] == pytest.approx(metrics["test_accuracy"], abs=0.01)
    assert len(metrics["exit_accuracy"]) == 2 and len(metrics["exit_shares"]) == 2
    assert metrics["thresholds"] == run.early_exit()["thresholds"]
    assert 0 < metrics["avg_flops"] <= metrics["cost"]["flops"]
    saved = json.loads((searched / "final" / "metrics.json").read_text())
    assert saved["init"] == str(job.warm)
    tuned = torch.load(searched / "final" / "model.pt", weights_only=True)
    # the first exit was trained too (its head gets no gradient from the last exit's loss)
    assert not torch.equal(tuned["exits.0.linear.weight"], sliced.exits[0].linear.weight)


def test_report_draws_the_avg_flops_curve_and_the_best_network_s_exits(searched: Path) -> None:
    run = read_run(searched)
    best = ranked(run, 1)[0]
    profile = exit_profile(best)
    assert len(profile) == 2 and sum(r["share"] for r in profile) == pytest.approx(1.0)
    assert [r["accuracy"] for r in profile] == [best.metrics["exit0_accuracy"],
                                                best.metrics["exit1_accuracy"]]
    assert sum(r["share"] * r["flops"] for r in profile) == pytest.approx(
        best.metrics["avg_flops"])
    page = write_report(searched).read_text()
    for name in ("tradeoff-avg_flops.png", "exits.png"):
        assert (searched / "report" / name).stat().st_size > 1000
        assert f'id="{name[:-4]}"' in page
    assert "Exits of the best network" in page


def _benchmark():
    """``benchmarks/dynamic_inference.py`` as a module."""
    return load_benchmark("dynamic_inference")


@pytest.mark.slow
def test_dynamic_inference_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    bench = _benchmark()
    supernet = save_tiny(tmp_path / "supernet")
    result = bench.main(["--supernet", str(supernet), "--out", str(tmp_path / "out"),
                         "--trials", "3", "--caps", "0.6,1.0", "--strategy", "random"])
    assert [round(row["cap"] / result["largest_static_flops"], 2) for row in result["table"]] \
        == [0.6, 1.0]
    for row in result["table"]:
        for name in ("dynamic", "static", "baseline"):
            if row[name] is not None:  # every chosen network meets its cap
                assert row[name]["val"]["avg_flops"] <= row["cap"] * (1 + 1e-9)
    assert set(result["targets"]) == {"val", "test"}
    assert json.loads((tmp_path / "out" / "dynamic_inference.json").read_text()) == result
    assert (tmp_path / "out" / "dynamic_inference.png").stat().st_size > 1000


@pytest.mark.slow
def test_dynamic_inference_benchmark_starts_from_the_largest(tmp_path: Path) -> None:
    bench = _benchmark()
    supernet = save_tiny(tmp_path / "supernet")
    # one trial per search: the largest network, so only the full cap finds a static one
    result = bench.main(["--supernet", str(supernet), "--out", str(tmp_path / "out"),
                         "--trials", "1", "--caps", "0.6,1.0", "--strategy", "random",
                         "--start", "largest"])
    low, full = result["table"]
    assert low["static"] is None
    assert full["static"]["val"]["avg_flops"] == result["largest_static_flops"]
    # the table keeps each network's JSON: the largest network rebuilds from it
    genome = load_genome(json.dumps(full["static"]["json"]))
    assert genome.key == full["static"]["genome"]


def test_the_oracle_pays_the_first_right_exit_of_the_cheapest_right_inputs() -> None:
    from epnas.evaluators.supernet import Outcome

    bench = _benchmark()
    correct = np.array([[1, 0, 0, 1, 0],    # exit 0
                        [1, 1, 1, 0, 0]])   # exit 1: three right, so three are kept
    outcome = Outcome(np.zeros((2, 5)), correct.astype(bool), [1.0, 3.0])
    # inputs 0 and 3 out at exit 0 (1 each), one of 1 and 2 at exit 1 (3), two at exit 0
    assert bench.oracle_flops(outcome) == pytest.approx((1 + 1 + 3 + 1 + 1) / 5)


def test_the_benchmark_profiles_exits_without_searching(tmp_path: Path) -> None:
    bench = _benchmark()
    supernet = save_tiny(tmp_path / "supernet")
    rows = bench.main(["--supernet", str(supernet), "--out", str(tmp_path / "out"),
                       "--profile", "1"])["profile"]
    assert [r["network"] for r in rows] == ["largest", "random 0"]
    for r in rows:
        assert r["exit_flops"][0] <= r["oracle_flops"] <= r["exit_flops"][-1]
        assert r["chosen_accuracy"] >= r["exit_accuracy"][-1]  # no cap: never below static
    assert json.loads((tmp_path / "out" / "exit_profile.json").read_text()) == rows
