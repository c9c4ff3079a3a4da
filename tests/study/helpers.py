"""Test-only evaluators and strategies, loadable as ``tests.study.helpers:Name``."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.spaces.base import Space
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.strategies.random import RandomSearch
from epnas.train.threads import follow
from epnas.trial import Candidate, Result, TrialContext


class Sleepy(SyntheticEvaluator):
    """The synthetic evaluator with a controllable cost and faults.

    Args:
        sleep: seconds every evaluation takes.
        setup: seconds creating the evaluator takes (as loading a data set would).
        log: a file that gets one ``key fidelity pid`` line per evaluation (appended
            before returning, so a line means the evaluation finished).
        crash_every: the worker process exits abruptly on every k-th evaluation it
            makes (``os._exit``), as an out-of-memory kill would.
        crash_once: a path; the first evaluation anywhere that finds it missing creates
            it and exits the process abruptly.
        raise_every: every k-th evaluation raises ``RuntimeError``.
        interrupt_at: the k-th evaluation raises ``KeyboardInterrupt`` (Ctrl-C).
        full_while: a path; while it exists, saving a trial's weights fails with
            ``OSError(ENOSPC)`` naming the weights file, as on a full disk.
    """

    def __init__(self, sleep: float = 0.0, setup: float = 0.0, log: str | None = None,
                 crash_every: int | None = None, crash_once: str | None = None,
                 raise_every: int | None = None, interrupt_at: int | None = None,
                 full_while: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        time.sleep(setup)
        self.sleep, self.log = sleep, log
        self.crash_every, self.crash_once, self.raise_every = crash_every, crash_once, raise_every
        self.interrupt_at, self.full_while = interrupt_at, full_while
        self.calls = 0

    def evaluate_trial(self, candidate: Candidate, context: TrialContext) -> Result:
        result = self.evaluate(candidate)
        if self.full_while and os.path.exists(self.full_while):
            path = os.path.join(context.directory or ".", "model.pt")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return result

    def evaluate(self, candidate: Candidate) -> Result:
        self.calls += 1
        time.sleep(self.sleep)
        if self.crash_every and self.calls % self.crash_every == 0:
            os._exit(3)
        if self.crash_once and not os.path.exists(self.crash_once):
            open(self.crash_once, "w").close()
            os._exit(3)
        if self.raise_every and self.calls % self.raise_every == 0:
            raise RuntimeError(f"boom at call {self.calls}")
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        result = super().evaluate(candidate)
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{candidate.key} {candidate.fidelity} {os.getpid()}\n")
        return result


class ThreadProbe(SyntheticEvaluator):
    """Takes ``candidate.info["sleep"]`` seconds, following the worker's thread allowance
    as the trainer does; reports the most and the fewest threads it was given."""

    def evaluate(self, candidate: Candidate) -> Result:
        seen = []
        end = time.monotonic() + candidate.info["sleep"]
        while time.monotonic() < end:
            seen.append(follow())
            time.sleep(0.01)
        result = super().evaluate(candidate)
        return replace(result, metrics={**result.metrics, "max_threads": max(seen),
                                        "min_threads": min(seen)})


class RepeatOptions(StrategyOptions):
    distinct: int = 3  # how many different genomes are cycled through


class Repeat(Strategy):
    """Asks ``distinct`` random genomes over and over, in a cycle (exercises caching)."""

    Options = RepeatOptions
    options: RepeatOptions

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        rng = np.random.default_rng(seed)
        self.genomes = [space.sample(rng) for _ in range(self.options.distinct)]
        self.asked = 0
        self.told: list[tuple[str, str]] = []

    def ask(self) -> Candidate:
        genome = self.genomes[self.asked % len(self.genomes)]
        self.asked += 1
        return Candidate(genome, None, {"index": self.asked})

    def tell(self, candidate: Candidate, result: Result) -> None:
        self.told.append((candidate.key, result.status))

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked = state["asked"]


class Finite(Repeat):
    """:class:`Repeat` that is done after ``limit`` asks."""

    limit = 4

    @property
    def done(self) -> bool:
        return self.asked >= self.limit

    def planned_trials(self) -> tuple[int, str]:
        return self.limit, f"{self.limit} asks"


class Unstable(RandomSearch):
    """Random search that asks something else every time it is created (seeded from the OS),
    as a strategy with unrecorded randomness would."""

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.rng = np.random.default_rng()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked, self.told = state["asked"], state["told"]


class Threads(SyntheticEvaluator):
    """Reports the torch threads a trial started with (metric ``threads``), then changes
    them, as training code may: the next trial in that worker must start from its own."""

    def evaluate(self, candidate: Candidate) -> Result:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(3)
        result = super().evaluate(candidate)
        return Result(result.status, {**result.metrics, "threads": threads})


class Device(Sleepy):
    """:class:`Sleepy` reporting the GPU its worker was pinned to: metric ``device`` is the
    worker's ``CUDA_VISIBLE_DEVICES`` as a number (-1 when unset)."""

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        device = float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))
        return Result(result.status, {**result.metrics, "device": device})


class Hungry(Sleepy):
    """:class:`Sleepy` whose trials need ``memory`` bytes each (its ``trial_memory``), or
    ``huge`` bytes for a genome whose key starts with a digit below ``huge_below``."""

    def __init__(self, memory: float = 0.0, huge: float = 1e18, huge_below: int = 0,
                 **options: Any) -> None:
        super().__init__(**options)
        self.memory, self.huge, self.huge_below = memory, huge, huge_below

    def trial_memory(self, genome: Any) -> float:
        first = genome.key[0]
        return self.huge if first.isdigit() and int(first) < self.huge_below else self.memory
