"""Measured latency: the median forward time at batch 1, usable as a constraint."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

import epnas
from epnas.evaluators.latency import measure_latency
from epnas.evaluators.training import TrainingEvaluator
from epnas.trial import Candidate


class _Sleepy(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        time.sleep(self.seconds)
        return x


def test_latency_is_the_median_forward_time_at_batch_one() -> None:
    model = _Sleepy(0.004)
    ms = measure_latency(model, (3, 5, 7), repeats=7, warmup=2)
    assert 4.0 <= ms < 40.0
    assert model.seen == [(1, 3, 5, 7)] * 9 and not model.training


def test_training_evaluator_measures_latency_for_a_constraint() -> None:
    space = epnas.spaces.get("layerwise")
    genome = space.sample(np.random.default_rng(0), depth=2)
    evaluator = TrainingEvaluator("digits", latency=True, schedule={"epochs": 1})
    result = evaluator.evaluate(Candidate(genome, "prediction"))
    assert result.status == "done" and result.metrics["latency"] > 0
    assert "latency" in evaluator.metrics and set(evaluator.metrics) <= set(result.metrics)
    tight = epnas.objective.Objective.of([f"latency::{result.metrics['latency'] / 4}"])
    assert not tight.feasible(result.metrics)
