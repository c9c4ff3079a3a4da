"""What flows between Strategy, Evaluator and Study: a Candidate and its Result."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome

STATUSES = ("queued", "running", "done", "cached", "failed")
FAILURE_REASONS = ("error", "diverged", "oom", "timeout", "worker-lost", "filtered",
                   "memory", "storage")
STORAGE = "storage"  # a worker could not write the trial's files: never stored as failed,
# the Study stops the search on it and the trial stays queued for resume


@dataclass(frozen=True)
class Candidate:
    """A genome a strategy wants evaluated.

    Attributes:
        genome: the architecture.
        fidelity: how to evaluate it (``prediction``, ``full``, an EcoNAS spec such as
            ``c=0.25,r=0.5,s=0.5,e=5``, or a tabular ``12ep``/``200ep``); ``None`` lets
            the evaluator use its default.
        info: JSON-ready bookkeeping (episode, step, branch, parent key, ...) stored with
            the trial and shown in reports.
    """

    genome: Genome
    fidelity: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.genome.key

    def to_dict(self) -> dict[str, Any]:
        return {"genome": self.genome.to_dict(), "fidelity": self.fidelity,
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(load_genome(data["genome"]), data.get("fidelity"), dict(data.get("info", {})))


TrialProgress = Callable[[int, int, Mapping[str, float]], None]
"""A trial's progress: epoch (from 1), epochs in all, and that epoch's figures."""


@dataclass(frozen=True)
class TrialContext:
    """Where one trial of a study keeps its files (None: nowhere), and who listens to
    its progress.

    Attributes:
        directory: the trial's own directory (``RUN_DIR/trials/<id>/``); the training
            evaluator writes the trained weights there as ``model.pt``.
        weights: the parameter-sharing dictionary snapshot of the current step, to
            warm-start from.
        progress: called through :meth:`report` while the trial runs (the Study's live
            display); local worker processes forward it to the Study's process, Ray
            workers do not. Not part of :meth:`to_dict`.
    """

    directory: str | None = None
    weights: str | None = None
    progress: TrialProgress | None = field(default=None, compare=False, repr=False)

    def report(self, epoch: int, epochs: int, figures: Mapping[str, float]) -> None:
        """Tell whoever listens that epoch ``epoch`` of ``epochs`` ended with ``figures``
        (``loss``, ``train_accuracy``, and ``accuracy`` on epochs that validate)."""
        if self.progress is not None:
            self.progress(epoch, epochs, {k: float(v) for k, v in figures.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "weights": self.weights}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialContext:
        return cls(data.get("directory"), data.get("weights"))


@dataclass(frozen=True)
class Result:
    """The outcome of evaluating one candidate.

    Attributes:
        status: ``done``, ``cached`` (answered from the store) or ``failed``.
        metrics: ``accuracy`` (a fraction, what the search maximises), cost metrics
            (``params``, ``flops``, ``bytes``, ``intensity``, ...), timings.
        reason: why a failed trial failed (one of :data:`FAILURE_REASONS`).
        error: the error text of a failure.
        reward, feasible: filled in by the Study's objective before ``tell``.
    """

    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    reward: float | None = None
    feasible: bool | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if self.status == "failed" and self.reason not in FAILURE_REASONS:
            raise ValueError(f"a failed result needs a reason from {FAILURE_REASONS}")

    @classmethod
    def failure(cls, reason: str, error: str = "",
                metrics: Mapping[str, float] | None = None) -> Result:
        return cls("failed", dict(metrics or {}), reason=reason, error=error or reason)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "cached")

    @property
    def accuracy(self) -> float:
        """The searched accuracy, 0 for failures (NaN is treated as a failure)."""
        value = self.metrics.get("accuracy", 0.0) if self.ok else 0.0
        return 0.0 if value is None or math.isnan(value) else float(value)

    def scored(self, reward: float, feasible: bool) -> Result:
        return replace(self, reward=reward, feasible=feasible)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metrics": dict(self.metrics), "reason": self.reason,
                "error": self.error, "reward": self.reward, "feasible": self.feasible}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        return cls(**{k: data.get(k) for k in ("status", "reason", "error", "reward",
                                               "feasible")}, metrics=dict(data["metrics"]))
