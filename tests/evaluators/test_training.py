"""The training evaluator on the embedded digits data: real training, real failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import epnas
from epnas.errors import EpnasError
from epnas.evaluators.training import TrainingEvaluator
from epnas.spaces import Layer
from epnas.trial import Candidate


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))


def small_cnn() -> epnas.Genome:
    space = epnas.spaces.get("layerwise")
    return space.genome([Layer(1, "conv", 0, -1, 3, 32, "relu"),
                         Layer(2, "maxpool", 1, -1, 2),
                         Layer(3, "conv", 2, -1, 3, 64, "relu")])


def test_trains_digits_well_above_chance_with_costs() -> None:
    evaluator = TrainingEvaluator("digits", seed=0)
    result = evaluator.evaluate(Candidate(small_cnn()))
    assert result.status == "done", result.error
    assert result.accuracy > 0.85
    genome_cost = epnas.cost(small_cnn(), (1, 8, 8), 10)
    assert result.metrics["params"] == genome_cost.params
    assert result.metrics["flops"] == genome_cost.flops
    assert result.metrics["epochs"] == 4 and result.metrics["train_seconds"] > 0
    # what a study lets constraints use before the first trial (issue 16)
    assert set(evaluator.metrics) | set(evaluator.costs(small_cnn())) <= set(result.metrics)


def test_same_seed_same_accuracy() -> None:
    a = TrainingEvaluator("digits", seed=3, schedule={"epochs": 2, "stop_epoch": 2})
    b = TrainingEvaluator("digits", seed=3, schedule={"epochs": 2, "stop_epoch": 2})
    ra, rb = a.evaluate(Candidate(small_cnn())), b.evaluate(Candidate(small_cnn()))
    assert ra.metrics["accuracy"] == rb.metrics["accuracy"]
    assert ra.metrics["loss"] == rb.metrics["loss"]


def test_divergence_is_a_failed_trial() -> None:
    evaluator = TrainingEvaluator("digits", schedule={"lr": 1e9})
    result = evaluator.evaluate(Candidate(small_cnn()))
    assert (result.status, result.reason) == ("failed", "diverged")


def test_time_limit_is_a_timeout() -> None:
    evaluator = TrainingEvaluator("digits", time_limit=1e-6)
    result = evaluator.evaluate(Candidate(small_cnn(), "full"))
    assert (result.status, result.reason) == ("failed", "timeout")


def test_unknown_fidelity_and_bad_schedule_options() -> None:
    evaluator = TrainingEvaluator("digits")
    result = evaluator.evaluate(Candidate(small_cnn(), "200ep"))
    assert result.reason == "error" and "unknown fidelity" in result.error
    with pytest.raises(EpnasError, match="bogus"):
        TrainingEvaluator("digits", schedule={"bogus": 1})


def test_train_command_writes_the_result_json(tmp_path, capsys) -> None:
    from epnas.cli import main

    genome_file = tmp_path / "g.json"
    genome_file.write_text(small_cnn().to_json())
    out = tmp_path / "result.json"
    assert main(["train", "--genome", str(genome_file), "--dataset", "digits",
                 "--schedule", "prediction", "--epochs", "3", "--schedule-opt", "lr=0.2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["epochs"] == 3 and result["status"] == "done"
    assert 0.5 < result["validation_accuracy"] <= 1 and 0.5 < result["test_accuracy"] <= 1
    assert result["train_seconds"] > 0 and result["images_per_second"] > 0
    assert result["params"] == epnas.cost(small_cnn(), (1, 8, 8), 10).params
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "test" in printed


def test_reference_example_genome_is_the_documented_network() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "fmnist_small.json"
    genome = epnas.load_genome(path.read_text())
    cost = epnas.cost(genome, (1, 28, 28), 10)
    ops = [layer.op for layer in genome.layers]
    assert ops.count("conv") == 3 and ops.count("maxpool") == 2
    assert 35_000 < cost.params < 45_000


def test_train_command_rejects_an_unknown_schedule_field(tmp_path, capsys) -> None:
    from epnas.cli import main

    genome_file = tmp_path / "g.json"
    genome_file.write_text(small_cnn().to_json())
    assert main(["train", "--genome", str(genome_file), "--schedule-opt", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_max_memory_refuses_a_candidate_before_building_it(monkeypatch) -> None:
    evaluator = TrainingEvaluator("digits", max_memory=1e9)
    batch = evaluator.schedule("prediction", evaluator.loaded).batch_size
    memory = epnas.cost(small_cnn(), (1, 8, 8), 10).memory(batch)
    evaluator.max_memory = memory * 0.99

    def never(*args, **kwargs):
        raise AssertionError("a candidate above max_memory was built")

    monkeypatch.setattr("epnas.evaluators.training.build", never)
    result = evaluator.evaluate(Candidate(small_cnn()))
    assert (result.status, result.reason) == ("failed", "oom")
    assert "estimated training memory" in result.error and "not trained" in result.error
    assert result.metrics["memory"] == memory and "train_seconds" not in result.metrics


def test_search_max_memory_fails_oversized_candidates_as_oom(tmp_path: Path, capsys) -> None:
    import csv

    from epnas.cli import main

    out = tmp_path / "run"
    assert main(["search", "--strategy", "random", "--trials", "3", "--max-memory", "1k",
                 "--quiet", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", "oom")] * 3
    assert all(float(r["memory"]) > 1e3 for r in rows)
    assert "no trial finished with a result" in capsys.readouterr().out


def test_cuda_graphs_option_reaches_the_trainer(monkeypatch) -> None:
    from epnas.evaluators import training

    seen = []

    def recording_train(*args, **kwargs):
        seen.append(kwargs["cuda_graphs"])
        return real_train(*args, **kwargs)

    real_train = training.train
    monkeypatch.setattr(training, "train", recording_train)
    evaluator = TrainingEvaluator("digits", cuda_graphs="on",
                                  schedule={"epochs": 1, "stop_epoch": 1})
    result = evaluator.evaluate(Candidate(small_cnn()))
    assert result.status == "done", result.error
    assert seen == ["on"]  # on a CPU "on" runs the static-buffer step without capture
    with pytest.raises(EpnasError, match="cuda_graphs must be one of"):
        TrainingEvaluator("digits", cuda_graphs="always")
