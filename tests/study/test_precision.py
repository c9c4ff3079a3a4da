"""Reproducible precision: ``auto`` is decided once per run and recorded in its config, so
resume, workers and other users train as the run's first session did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from epnas.cli import main
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.train import trainer
from epnas.trial import Candidate, Result

ECHO = f"{__name__}:PrecisionEcho"
SEARCH = ["search", "--strategy", "random", "--evaluator", ECHO, "--quiet", "--trials", "2"]


class PrecisionEcho(SyntheticEvaluator):
    """The synthetic evaluator with a training schedule: each result says (metric
    ``bf16``) which precision the trial was given."""

    def __init__(self, schedule: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.precision = (schedule or {}).get("precision", "missing")
        self.metrics = (*self.metrics, "bf16")

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        assert self.precision in ("fp32", "bf16"), self.precision  # never auto in a trial
        return Result(result.status, {**result.metrics, "bf16": float(self.precision == "bf16")})


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``user(name, speedup)``: become a user whose cache measures bf16 at ``speedup``x
    fp32, on a CPU with native bf16."""
    monkeypatch.setattr(trainer, "_native_cpu_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def become(name: str, speedup: float) -> None:
        cache = tmp_path / name / "cache"
        monkeypatch.setenv("EPNAS_CACHE", str(cache))
        monkeypatch.setattr(trainer, "_measure_bf16_speedup", lambda: speedup)
        monkeypatch.setattr(trainer, "networks_bf16_speedup", lambda key, networks: speedup)
        record = cache / "cpu-bf16.json"
        if record.is_file():  # measured again since (another load on the machine)
            record.write_text(json.dumps({**json.loads(record.read_text()), "speedup": speedup}))
        trainer.cpu_bf16_speedup.cache_clear()
        assert trainer.cpu_bf16_speedup() == speedup  # this user's cache says so

    yield become
    trainer.cpu_bf16_speedup.cache_clear()


def recorded(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text())


def bf16_trials(run: Path) -> list[float]:
    from epnas.store import Store

    with Store(run, readonly=True) as store:
        return [t.metrics["bf16"] for t in store.trials()]


def test_auto_is_recorded_and_every_resume_and_user_keeps_it(
        tmp_path: Path, user, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    user("alice", 2.0)
    assert main([*SEARCH, "--out", str(run)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "precision bf16 (auto: bf16 measured 2.00x faster than fp32" in header
    assert (recorded(run)["precision"], bf16_trials(run)) == ("bf16", [1.0, 1.0])
    assert "2.00x" in recorded(run)["precision_note"]

    # the same user's cache now says otherwise: the run keeps its decision
    user("alice", 0.5)
    assert main(["resume", str(run), "--trials", "3"]) == 0
    # so does another user, whose cache says otherwise too, resuming or searching again
    user("bob", 0.5)
    assert main(["resume", str(run), "--trials", "4"]) == 0
    assert main([*SEARCH, "--trials", "5", "--out", str(run)]) == 0
    assert (recorded(run)["precision"], bf16_trials(run)) == ("bf16", [1.0] * 5)

    # bob's own new run decides from bob's measurement
    assert main([*SEARCH, "--out", str(tmp_path / "bob")]) == 0
    assert bf16_trials(tmp_path / "bob") == [0.0, 0.0]
    assert "below 1.25x" in recorded(tmp_path / "bob")["precision_note"]


def test_an_explicit_precision_is_honoured_and_a_changed_one_refused(
        tmp_path: Path, user, capsys: pytest.CaptureFixture) -> None:
    user("alice", 2.0)
    run = tmp_path / "run"
    assert main([*SEARCH, "--precision", "fp32", "--out", str(run)]) == 0
    assert (recorded(run)["precision"], bf16_trials(run)) == ("fp32", [0.0, 0.0])
    assert main([*SEARCH, "--precision", "bf16", "--out", str(run)]) == 2
    assert "precision: 'bf16' vs 'fp32'" in capsys.readouterr().err


def test_a_training_evaluator_trains_at_the_run_precision(tmp_path: Path, user) -> None:
    from epnas.evaluators.training import TrainingEvaluator
    from epnas.executors import EvaluatorSpec

    user("alice", 2.0)
    spec = EvaluatorSpec("training", {"schedule": {"epochs": 1}}, {"precision": "bf16"})
    evaluator = spec.create()
    assert isinstance(evaluator, TrainingEvaluator)
    assert evaluator.schedule("prediction").precision == "bf16"
    explicit = EvaluatorSpec("training", {"schedule": {"precision": "fp32"}}, {"precision": "bf16"})
    assert explicit.create().schedule("prediction").precision == "fp32"
    assert EvaluatorSpec("synthetic", {}, {"precision": "bf16"}).create() is not None


def test_an_invalid_precision_is_one_line_before_the_run_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main([*SEARCH, "--precision", "fp64", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "precision" in err and "fp64" in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_the_cpu_decision_needs_native_bf16_and_a_clear_margin(monkeypatch) -> None:
    monkeypatch.setattr(trainer, "_native_cpu_bf16", lambda: False)
    assert trainer.decide_precision("cpu") == ("fp32", "auto: this CPU has no native bf16")
    monkeypatch.setattr(trainer, "_native_cpu_bf16", lambda: True)
    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: 1.2)
    assert trainer.decide_precision("cpu")[0] == "fp32"  # faster, but not clearly
    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: 1.3)
    assert trainer.decide_precision("cpu")[0] == "bf16"


def test_retrain_trains_at_the_search_precision(tmp_path: Path, user) -> None:
    from epnas.retrain import plan

    user("alice", 2.0)
    run = tmp_path / "run"
    assert main([*SEARCH, "--out", str(run)]) == 0
    user("bob", 0.5)  # another user retrains it
    assert plan(run, dataset="digits").schedule.precision == "bf16"
    chosen = plan(run, dataset="digits", schedule={"precision": "fp32"})
    assert chosen.schedule.precision == "fp32"


def test_the_searched_networks_decide_bf16_where_they_can_be_timed(monkeypatch) -> None:
    monkeypatch.setattr(trainer, "_native_cpu_bf16", lambda: True)
    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: 1.6)
    precision, note = trainer.decide_precision("cpu", lambda: 1.4)
    assert precision == "bf16" and "searched space 1.40x faster" in note
    precision, note = trainer.decide_precision("cpu", lambda: 0.6)
    assert precision == "fp32" and "at 0.60x the speed" in note
    assert "a plain convolution at 1.60x" in note
    assert trainer.decide_precision("cpu", lambda: None)[0] == "bf16"  # nothing to time

    def never() -> float:
        raise AssertionError("a CPU whose plain convolution is not faster in bf16 stays fp32")

    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: 1.1)
    assert trainer.decide_precision("cpu", never)[0] == "fp32"


def test_the_networks_speedup_is_their_median_kept_per_key(tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))
    networks = [(torch.nn.Linear(2, 2), torch.zeros(1, 2)) for _ in range(3)]
    speeds = dict(zip(map(id, (m for m, _ in networks)), (0.5, 1.4, 2.0)))
    monkeypatch.setattr(trainer, "model_bf16_speedup", lambda model, x: speeds[id(model)])
    built: list[str] = []

    def build(key: str):
        return lambda: built.append(key) or networks

    assert trainer.networks_bf16_speedup("a", build("a")) == 1.4
    assert trainer.networks_bf16_speedup("a", build("a")) == 1.4  # from the cache
    assert built == ["a"]
    assert trainer.networks_bf16_speedup("b", lambda: []) is None  # nothing to time
    speeds.update(zip(speeds, (0.2, 0.3, 0.4)))
    assert trainer.networks_bf16_speedup("c", build("c")) == 0.3 and built == ["a", "c"]
    assert trainer.networks_bf16_speedup("a", build("a")) == 1.4


def test_a_study_times_networks_of_its_own_space_built_for_its_data(monkeypatch) -> None:
    from epnas.config import StudyConfig
    from epnas.study import PROBE_NETWORKS, _decided_precision

    monkeypatch.setattr(trainer, "_native_cpu_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer, "cpu_bf16_speedup", lambda: 1.6)
    timed: list[tuple[torch.nn.Module, torch.Tensor]] = []
    keys: list[dict] = []

    def slower(key, networks):
        keys.append(json.loads(key))
        timed.extend(networks())
        return 0.55

    monkeypatch.setattr(trainer, "networks_bf16_speedup", slower)
    config = StudyConfig.parse({"space": "multistage", "dataset": "digits", "trials": 2,
                                "evaluator": "training", "out": None})
    decided = _decided_precision(config, force_new=True)
    assert decided.precision == "fp32" and "0.55x the speed" in decided.precision_note
    assert keys[0]["space"] == "multistage" and keys[0]["input"] == [1, 8, 8]
    assert len(timed) == PROBE_NETWORKS
    for model, example in timed:
        assert type(model).__name__ == "MultistageNet" and example.shape[1:] == (1, 8, 8)
        assert model(example)[-1].shape[-1] == 10  # digits' classes
