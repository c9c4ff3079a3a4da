"""Random search: independent uniform samples from the space."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from epnas.strategies.base import Strategy, StrategyOptions
from epnas.trial import Candidate, Result


class RandomOptions(StrategyOptions):
    fidelity: str | None = None  # evaluator fidelity for every candidate (None: default)
    depth: int | None = Field(None, ge=0)  # units per sampled genome (None: random)


class RandomSearch(Strategy):
    """Samples every candidate independently with ``space.sample``."""

    Options = RandomOptions
    options: RandomOptions

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.asked = 0
        self.told = 0

    def ask(self) -> Candidate:
        genome = self.space.sample(self.rng, depth=self.options.depth)
        self.asked += 1
        return Candidate(genome, self.options.fidelity, {"index": self.asked})

    def tell(self, candidate: Candidate, result: Result) -> None:
        self.told += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "asked": self.asked, "told": self.told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        self.asked, self.told = state["asked"], state["told"]
