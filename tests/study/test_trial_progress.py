"""Progress inside a running trial: evaluators report each epoch through their
TrialContext, local workers forward it to the Study's process, the live display shows it."""

from __future__ import annotations

import io
from typing import Any

import pytest

from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.progress import LiveReporter
from epnas.study import Study
from epnas.trial import Candidate, Result, TrialContext

EPOCHS = 3


class Epochs(SyntheticEvaluator):
    """The synthetic evaluator, "training" for ``EPOCHS`` epochs that it reports."""

    def evaluate_trial(self, candidate: Candidate, context: TrialContext) -> Result:
        for epoch in range(1, EPOCHS + 1):
            context.report(epoch, EPOCHS, {"loss": 1.0 / epoch, "train_accuracy": epoch / 10})
        return self.evaluate(candidate)


def events_of(study: Study) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    study.trial_progress = lambda *event: events.append(event)
    study.run()
    return events


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_every_epoch_of_every_trial_reaches_the_study(workers: int) -> None:
    study = Study(strategy="random", evaluator=f"{__name__}:Epochs", trials=4, workers=workers)
    events = events_of(study)
    # each trial's epochs in order, whatever worker ran it
    assert sorted((e[0], e[1]) for e in events) == [(t, k) for t in (1, 2, 3, 4)
                                                    for k in range(1, EPOCHS + 1)]
    for trial in (1, 2, 3, 4):
        mine = [e for e in events if e[0] == trial]
        assert [e[1] for e in mine] == [1, 2, 3] and {e[2] for e in mine} == {EPOCHS}
        assert mine[-1][3] == {"loss": pytest.approx(1 / 3), "train_accuracy": 0.3}


def test_nobody_listening_costs_the_workers_nothing() -> None:
    study = Study(strategy="random", evaluator=f"{__name__}:Epochs", trials=2)
    study.run()  # trial_progress unset: no context carries a listener
    assert study.summary().counts == {"done": 2}


def test_the_live_display_shows_each_running_trial_until_it_ends() -> None:
    study = Study(strategy="random", evaluator="synthetic", trials=1)
    reporter = LiveReporter(study.config, study.summary(), io.StringIO(), None)
    reporter.epoch(3, 1, 4, {"loss": 2.0, "train_accuracy": 0.5})
    reporter.epoch(4, 2, 4, {"loss": 2.0, "train_accuracy": 0.25, "accuracy": 0.75})
    text = "".join(str(line) for line in reporter.__rich__().renderables[:3])
    assert "#3 epoch 1/4 train acc 50.00%" in text and "#4 epoch 2/4 acc 75.00%" in text
    study.progress, study.trial_progress = reporter.trial, reporter.epoch
    study.run()  # trial 1 finishes: it leaves the running ones
    assert set(reporter.running) == {3, 4}


@pytest.mark.slow
def test_a_real_training_reports_its_epochs(tmp_path, monkeypatch) -> None:
    from epnas import spaces
    from epnas.evaluators.training import TrainingEvaluator
    from epnas.spaces import Layer

    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path))
    evaluator = TrainingEvaluator("digits", schedule={"epochs": 2, "stop_epoch": 2},
                                  share=False)
    genome = spaces.get("layerwise").genome([Layer(1, "conv", 0, -1, 3, 16, "relu")])
    events: list[tuple[Any, ...]] = []
    context = TrialContext(progress=lambda *event: events.append(event))
    result = evaluator.evaluate_trial(Candidate(genome, "prediction"), context)
    assert result.status == "done"
    assert [(e[0], e[1]) for e in events] == [(1, 2), (2, 2)]
    assert 0.0 <= events[0][2]["train_accuracy"] <= 1.0
    assert events[-1][2]["accuracy"] == result.metrics["accuracy"]  # validated at the end
