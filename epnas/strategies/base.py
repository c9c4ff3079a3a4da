"""The :class:`Strategy` interface: decides what to evaluate next (ask/tell)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from epnas.errors import EpnasError, validation_message
from epnas.objective import Objective
from epnas.registry import Registry
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome
from epnas.trial import Candidate, Result


class StrategyOptions(BaseModel):
    """Base of every strategy's options: frozen and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


CostFunction = Callable[[Genome], Mapping[str, float]]


@dataclass(frozen=True)
class SearchContext:
    """What a Study tells its strategy before the first ask (:meth:`Strategy.attach`).

    A strategy may size its own schedule from the budget and plan with the objective;
    it never enforces the budget itself (the Study does).
    """

    trials: int | None = None  # the study's trial budget (None: no limit)
    workers: int = 1  # evaluations the executor runs at once
    objective: Objective = field(default_factory=Objective)  # constraints and reward
    # the analytic cost metrics a result for a genome will carry, known before it is
    # evaluated (the evaluator's ``costs``); None when the evaluator cannot tell
    costs: CostFunction | None = None
    # the evaluator itself, for a strategy that consults it beyond costs (``dna`` reads
    # the ``distill`` evaluator's teacher block plan); None outside a study
    evaluator: Any = None


class Strategy(ABC):
    """Asks for candidates and learns from their results.

    A strategy knows nothing of threads, workers or files: the Study asks, evaluates,
    scores each result with the objective (filling ``reward`` and ``feasible``) and tells.
    ``ask`` returns None while the strategy waits for results it needs; ``done`` says it
    has nothing more to ask. Everything a strategy needs to continue after a crash is in
    ``state_dict`` (plain data and tensors only; it is never pickled).
    """

    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    supported_spaces: ClassVar[tuple[str, ...] | None] = None  # None: every space
    # named option sets (``--preset``): ``paper`` (the method's published values),
    # ``tabular`` (tuned for NAS-Bench-201 lookups), ``quick`` (the default CLI run)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # whether a study naming no preset takes ``tabular`` / ``quick`` where defined (False
    # for strategies whose defaults already size themselves from the study's budget)
    auto_preset: ClassVar[bool] = True
    # Candidates per worker a parallel Study may ask in one batch. More than 1 only where
    # asking ahead changes nothing that is asked (the asks do not depend on results not
    # yet told): workers then start another candidate as soon as they finish one instead
    # of waiting for the slowest trial of a batch of one per worker.
    lookahead: ClassVar[int] = 1
    name: str = ""
    # The fidelity whose results rank the run's best (None: every trial's). Strategies
    # that also evaluate at cheaper fidelities (EcoNAS) set it to their top level.
    report_fidelity: str | None = None

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        if not self.supports(space):
            raise EpnasError(f"strategy {type(self).__name__} does not support space "
                             f"{space.name!r}; it supports {list(self.supported_spaces or [])}")
        try:
            self.options = self.Options(**options)
        except ValidationError as exc:
            raise EpnasError(validation_message(f"{type(self).__name__} options", exc)) from None
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    context: SearchContext = SearchContext()

    def attach(self, context: SearchContext) -> None:
        """Learn the study's budget, workers and objective; the Study calls it once after
        creating the strategy, before :meth:`start_from` and :meth:`load_state_dict`
        (on resume too, with the budget of the resumed run)."""
        self.context = context

    def planned_trials(self) -> tuple[int, str] | None:
        """The most trials this strategy's own schedule asks for, and that schedule in
        words (``4 episodes x 3 steps x 4 branches``); None (the default) when it asks
        until the study's budget is spent. A run shows the budget it will use: the
        smaller of this and its trial budget."""
        return None

    @property
    def fidelities(self) -> tuple[str, ...]:
        """The fidelities this strategy's candidates name (empty: they name none and the
        study's applies). A study checks each with its evaluator before it starts; the
        default is the ``fidelity`` option of strategies that have one."""
        fidelity = getattr(self.options, "fidelity", None)
        return (fidelity,) if isinstance(fidelity, str) else ()

    @classmethod
    def supports(cls, space: Space) -> bool:
        return cls.supported_spaces is None or space.name in cls.supported_spaces

    @abstractmethod
    def ask(self) -> Candidate | None:
        """The next candidate, or None while waiting for results (or when done)."""

    def ask_batch(self, n: int) -> list[Candidate]:
        """Up to ``n`` candidates that can be evaluated in parallel."""
        batch: list[Candidate] = []
        while len(batch) < n and (candidate := self.ask()) is not None:
            batch.append(candidate)
        return batch

    @abstractmethod
    def tell(self, candidate: Candidate, result: Result) -> None:
        """Report the scored result of a candidate this strategy asked for."""

    def discard(self, candidate: Candidate) -> None:
        """Take back a candidate a filter rejected before evaluation; it is never told.

        The default tells it as a ``filtered`` failure (reward 0, infeasible): strategies
        that wait for every result they asked for go on, and learning ones learn to avoid
        such candidates. Strategies that can simply draw again override this.
        """
        self.tell(candidate, Result.failure("filtered", "rejected by a filter before "
                                                        "evaluation").scored(0.0, False))

    @property
    def done(self) -> bool:
        """True when the strategy's own schedule is over."""
        return False

    extensible = False  # whether :meth:`extend` can lengthen its own schedule

    def extend(self, trials: int) -> None:  # noqa: B027 (most have no schedule to extend)
        """Lengthen the strategy's own schedule so that it asks up to ``trials`` trials in
        all: the Study calls it when a resumed run was given a larger budget (a finished
        run included) and after restoring its state. Strategies that ask until the
        budget is spent need nothing; one with a fixed schedule overrides this and sets
        :attr:`extensible`."""

    def start_from(self, genomes: Sequence[Genome]) -> None:
        """Start from ``genomes`` (another run's best, ``--init-from``) instead of random ones.

        What a strategy does with them is its own choice, documented on it (random search
        and evolution evaluate them first, EPNAS transforms them in its first episode).
        Call it once on a fresh instance, before the first ``ask`` and before
        ``load_state_dict``. The default refuses: a strategy that can use seeds overrides
        this and calls :meth:`_check_seeds`.

        Raises:
            EpnasError: the strategy takes no seeds, or a genome is of another space.
        """
        able = [n for n in STRATEGIES.names()
                if STRATEGIES.resolve(n)[1].start_from is not Strategy.start_from]
        raise EpnasError(f"strategy {self.name or type(self).__name__} cannot start from "
                         f"given genomes; strategies that can: {', '.join(able)}")

    def _check_seeds(self, genomes: Sequence[Genome]) -> list[Genome]:
        """``genomes`` as a list, when each is a valid genome of this strategy's space."""
        from epnas.spaces.registry import space_of

        seeds = list(genomes)
        if not seeds:
            raise EpnasError("no genomes to start from")
        for genome in seeds:
            if space_of(genome) != self.space:
                raise EpnasError(f"a genome of space {genome.space!r} "
                                 f"({genome.options.model_dump(mode='json')}) cannot seed a "
                                 f"search of space {self.space.name!r} "
                                 f"({self.space.options.model_dump(mode='json')}): the space "
                                 "and its options must match")
            self.space.validate(genome)
        return seeds

    def stats(self) -> list[dict[str, float]]:
        """Per-episode figures (mean reward, entropy, feasible share) for the report."""
        return []

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this instance is."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (on a fresh instance with the same options)."""

    # --- helpers for subclasses ---------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


STRATEGIES: Registry[Strategy] = Registry("strategy", Strategy, EpnasError,
                                          group="epnas.strategies")


def get(name: str, space: Space | str, seed: int = 0, **options: Any) -> Strategy:
    """Create a strategy by registered name or ``module:Class`` spec."""
    from epnas.spaces.registry import get as get_space

    canonical, cls = STRATEGIES.resolve(name)
    strategy = cls(get_space(space) if isinstance(space, str) else space, seed, **options)
    strategy.name = canonical
    return strategy
