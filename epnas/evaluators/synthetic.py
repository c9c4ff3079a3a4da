"""A deterministic, instant evaluator for tests and overhead benchmarks on any space.

Accuracy is a smooth function of the analytic cost plus a small hash-seeded noise, so
strategies have a learnable signal (bigger networks score higher, with diminishing
returns, which makes constraints bite) and every genome always gets the same number:

``size = (log10(params) + log10(flops)) / 2``,
``accuracy = 0.1 + 0.89 * sigmoid((size - center) / width) + noise * (u - 0.5)``,
clipped to [0.1, 0.99], where ``u`` in [0, 1) comes from a hash of ``genome.key``.
Any fidelity other than ``full`` adds a second, fidelity-seeded noise of amplitude
``proxy_noise``, so a proxy ranks like ``full`` but not exactly.
"""

from __future__ import annotations

import hashlib
import math

from epnas.costmodel import Cost
from epnas.errors import EpnasError
from epnas.evaluators.base import Evaluator
from epnas.spaces.registry import cost
from epnas.trial import Candidate, Result


def _uniform(text: str) -> float:
    """A stable number in [0, 1) for ``text`` (Python's ``hash`` is salted per process)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / 16**13


class SyntheticEvaluator(Evaluator):
    """Scores genomes of any space by their analytic cost, without training.

    Args:
        input_shape: (C, H, W) the costs are computed for.
        num_classes: classifier outputs for the costs.
        center: the ``size`` (mean of log10 params and log10 FLOPs) scoring half way.
        width: how many decades of ``size`` the accuracy takes to rise.
        noise: amplitude of the per-genome noise.
        proxy_noise: amplitude of the extra per-(genome, fidelity) noise of fidelities
            other than ``full``.
        fail_every: every k-th evaluation is a ``Result.failure("error", ...)``.
        nan_every: every k-th evaluation is ``done`` with a NaN accuracy (what a buggy
            evaluator could report; the objective must score it 0). ``fail_every`` wins
            where both apply.

    Attributes:
        queries: how many times :meth:`evaluate` was called; failures are injected by
            this count, so they are deterministic when results are evaluated in ask order.
    """

    default_fidelity = "full"

    def __init__(self, input_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10, *,
                 center: float = 5.0, width: float = 0.5, noise: float = 0.02,
                 proxy_noise: float = 0.05, fail_every: int | None = None,
                 nan_every: int | None = None) -> None:
        for name, every in (("fail_every", fail_every), ("nan_every", nan_every)):
            if every is not None and every < 1:
                raise EpnasError(f"{name} must be a positive number of evaluations, got {every}")
        if width <= 0:
            raise EpnasError(f"width must be positive, got {width}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.center, self.width = center, width
        self.noise, self.proxy_noise = noise, proxy_noise
        self.fail_every, self.nan_every = fail_every, nan_every
        self.queries = 0

    def evaluate(self, candidate: Candidate) -> Result:
        self.queries += 1
        if self.fail_every and self.queries % self.fail_every == 0:
            return Result.failure("error", f"injected failure (evaluation {self.queries})")
        c = cost(candidate.genome, self.input_shape, self.num_classes)
        if self.nan_every and self.queries % self.nan_every == 0:
            accuracy = math.nan
        else:
            accuracy = self._accuracy(candidate, c)
        return Result("done", {"accuracy": accuracy, **c.as_dict(), "train_seconds": 0.0})

    def accuracy(self, candidate: Candidate) -> float:
        """The (deterministic) accuracy of a candidate, without counting a query."""
        return self._accuracy(candidate, cost(candidate.genome, self.input_shape,
                                              self.num_classes))

    def _accuracy(self, candidate: Candidate, c: Cost) -> float:
        size = (math.log10(max(c.params, 1)) + math.log10(max(c.flops, 1))) / 2
        trend = 1 / (1 + math.exp(-(size - self.center) / self.width))
        key = candidate.genome.key
        accuracy = 0.1 + 0.89 * trend + self.noise * (_uniform(key) - 0.5)
        fidelity = candidate.fidelity or self.default_fidelity
        if fidelity != self.default_fidelity:
            accuracy += self.proxy_noise * (_uniform(f"{key}@{fidelity}") - 0.5)
        return min(max(accuracy, 0.1), 0.99)
