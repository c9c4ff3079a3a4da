"""The :class:`Evaluator` interface: turns a candidate into a measured :class:`Result`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from epnas.errors import EpnasError
from epnas.registry import Registry
from epnas.trial import Candidate, Result


class Evaluator(ABC):
    """Evaluates candidates; pure with respect to the Study, so it can run in workers.

    Results carry ``accuracy`` (a fraction) and the cost metrics of the analytic cost
    model (``params``, ``flops``, ``bytes``, ``intensity``), so constraints can be applied
    to any evaluator's results.
    """

    fidelities: ClassVar[tuple[str, ...]] = ()
    default_fidelity: ClassVar[str | None] = None

    @abstractmethod
    def evaluate(self, candidate: Candidate) -> Result:
        """Measure one candidate; failures are returned as ``Result.failure``, not raised."""


EVALUATORS: Registry[Evaluator] = Registry("evaluator", Evaluator, EpnasError)
