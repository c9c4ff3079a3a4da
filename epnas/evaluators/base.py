"""The :class:`Evaluator` interface: turns a candidate into a measured :class:`Result`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from epnas.errors import EpnasError
from epnas.registry import Registry
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome
from epnas.spaces.registry import cost
from epnas.trial import Candidate, Result, TrialContext

if TYPE_CHECKING:
    from epnas.train.sharing import UnitState


class Evaluator(ABC):
    """Evaluates candidates; pure with respect to the Study, so it can run in workers.

    Results carry ``accuracy`` (a fraction) and the cost metrics of the analytic cost
    model (``params``, ``flops``, ``bytes``, ``intensity``), so constraints can be applied
    to any evaluator's results.
    """

    fidelities: ClassVar[tuple[str, ...]] = ()
    default_fidelity: ClassVar[str | None] = None
    input_shape: tuple[int, int, int] = (3, 32, 32)  # what the analytic costs assume
    num_classes: int = 10

    shares_weights: bool = False
    """Whether a study keeps a parameter-sharing dictionary for this evaluator's trials."""

    path_options: ClassVar[tuple[str, ...]] = ("data",)
    """The options that name files or directories: a new study records those that exist
    as absolute paths, so its run resumes from any directory."""

    metrics: tuple[str, ...] = ("accuracy",)
    """The metrics a ``done`` result carries besides those of :meth:`costs`. A study
    refuses a constraint on any other metric before it starts; an evaluator that reports
    more (``train_seconds``, ``latency``, ...) names them here."""

    @abstractmethod
    def evaluate(self, candidate: Candidate) -> Result:
        """Measure one candidate; failures are returned as ``Result.failure``, not raised."""

    def evaluate_trial(self, candidate: Candidate, context: TrialContext) -> Result:
        """Measure one trial of a study, given where its files go (default: ``evaluate``)."""
        return self.evaluate(candidate)

    def prepare(self) -> None:  # noqa: B027 (most evaluators need nothing prepared)
        """Load and check what every evaluation needs (a data set), raising
        :class:`EpnasError` on what is wrong; a study calls it before it writes anything,
        so bad data stops a run before its first trial rather than failing every trial.
        """

    def check_space(self, space: Space) -> None:  # noqa: B027 (most rate any space)
        """Raise :class:`EpnasError` when this evaluator cannot rate genomes of ``space``
        (a supernet rates only the space it was trained for); a study calls it before
        it writes anything. The default accepts every space."""

    def rated_space(self) -> tuple[str, dict[str, Any]] | None:
        """The space, with its options, that this evaluator alone can rate (a supernet:
        the one it was trained for); None (the default) when it rates any space.

        A study that gives no space options, and names no space or this one, searches it
        (options it gives must match: :meth:`check_space` judges them).
        """
        return None

    def check_fidelity(self, fidelity: str) -> None:
        """Raise :class:`EpnasError` when this evaluator cannot train at ``fidelity``.

        A study checks its ``--fidelity`` with it before the first trial. The default
        accepts the declared ``fidelities`` (anything when none are declared).
        """
        if self.fidelities and fidelity not in self.fidelities:
            raise EpnasError(f"{type(self).__name__} has no fidelity {fidelity!r}; use one of "
                             f"{', '.join(self.fidelities)}")

    def shared_units(self, candidate: Candidate, directory: Path) -> dict[str, UnitState] | None:
        """The weights a ``done`` trial (its files in ``directory``) gives the sharing
        dictionary, per sharing key; None when it gives none."""
        return None

    def costs(self, genome: Genome) -> dict[str, float]:
        """The cost metrics a result for ``genome`` would carry, without evaluating it.

        Filters (:mod:`epnas.strategies.filters`) judge candidates with it. The default
        is the analytic cost model at ``input_shape`` and ``num_classes``.
        """
        return cost(genome, self.input_shape, self.num_classes).as_dict()

    def trial_memory(self, genome: Genome) -> float:
        """Bytes evaluating ``genome`` needs beyond the worker process that runs it; a
        study sizes its pool of local workers with it. The default, 0, suits evaluators
        that do not train (table lookups, synthetic scores)."""
        return 0.0

    def query_cost(self, fidelity: str | None) -> float:
        """The share of a full evaluation one query at ``fidelity`` costs (default 1).

        ``epnas benchmark`` charges each query this much of its query budget, so a
        strategy that looks at cheap fidelities first gets the same budget as the others
        (the tabular evaluator: ``12ep`` costs 12/200).
        """
        return 1.0

    def entries(self) -> Iterable[tuple[Genome, float]] | None:
        """Every genome this evaluator can answer, with its accuracy (a fraction) at the
        default fidelity; None (the default) when it cannot enumerate them.

        A table implements it; ``epnas benchmark`` takes the optimum (and, under
        constraints, the feasible optimum) and the worst accuracy from it.
        """
        return None


EVALUATORS: Registry[Evaluator] = Registry("evaluator", Evaluator, EpnasError,
                                          group="epnas.evaluators")
