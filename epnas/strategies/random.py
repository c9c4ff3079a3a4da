"""Random search: independent uniform samples from the space (after any seed genomes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from epnas.spaces.genome import Genome
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.trial import Candidate, Result


class RandomOptions(StrategyOptions):
    fidelity: str | None = None  # evaluator fidelity for every candidate (None: default)
    depth: int | None = Field(None, ge=0)  # units per sampled genome (None: random)


class RandomSearch(Strategy):
    """Samples every candidate independently with ``space.sample``.

    Seeds given to :meth:`start_from` are asked first, in order, then sampling starts.
    """

    Options = RandomOptions
    options: RandomOptions
    # Samples never depend on results, so a batch can be long: workers then hardly ever
    # wait for a batch's last trial (a time budget stops dispatch mid-batch).
    lookahead = 32

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.asked = 0
        self.told = 0
        self.seeds: list[Genome] = []

    def start_from(self, genomes: Sequence[Genome]) -> None:
        self.seeds = self._check_seeds(genomes)

    def ask(self) -> Candidate:
        info: dict[str, Any] = {"index": self.asked + 1}
        if self.asked < len(self.seeds):
            genome = self.seeds[self.asked]
            info["origin"] = "seed"
        else:
            genome = self.space.sample(self.rng, depth=self.options.depth)
        self.asked += 1
        return Candidate(genome, self.options.fidelity, info)

    def tell(self, candidate: Candidate, result: Result) -> None:
        self.told += 1

    def discard(self, candidate: Candidate) -> None:
        self.asked -= 1  # the next sample replaces it

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "asked": self.asked, "told": self.told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        self.asked, self.told = state["asked"], state["told"]
