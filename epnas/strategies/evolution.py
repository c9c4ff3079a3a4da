"""Regularized (aging) evolution (Real et al., 2019).

The first ``population`` candidates are random samples (seed genomes given to
``start_from`` take the first places of that initial population). After that, every candidate is
a mutation (``space.mutate``) of the best of ``sample`` members drawn at random from the
population; each result joins the population and the oldest member leaves. Fitness is
the reward, so constraints act through the soft penalty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.trial import Candidate, Result


class EvolutionOptions(StrategyOptions):
    population: int = Field(20, ge=2)  # P: members kept (the oldest leaves)
    sample: int = Field(5, ge=1)  # S: tournament size
    fidelity: str | None = None  # evaluator fidelity (None: the evaluator's default)


class RegularizedEvolution(Strategy):
    """Aging evolution: tournament selection, one mutation per child, oldest dies."""

    Options = EvolutionOptions
    options: EvolutionOptions

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.asked = 0
        self.population: deque[dict[str, Any]] = deque()  # told members, oldest first
        self.seeds: list[Genome] = []

    def start_from(self, genomes: Sequence[Genome]) -> None:
        self.seeds = self._check_seeds(genomes)[: self.options.population]

    def ask(self) -> Candidate | None:
        o = self.options
        if self.asked < len(self.seeds):
            genome = self.seeds[self.asked]
            info: dict[str, Any] = {"index": self.asked, "origin": "seed"}
        elif self.asked < o.population:
            genome = self.space.sample(self.rng)
            info = {"index": self.asked, "origin": "random"}
        elif len(self.population) < min(o.population, o.sample):
            return None  # the first tournament waits for enough members
        else:
            picks = self.rng.choice(len(self.population), size=min(o.sample,
                                                                len(self.population)),
                                    replace=False)
            parent = max((self.population[i] for i in sorted(picks)),
                         key=lambda m: m["reward"])
            genome = self.space.mutate(load_genome(parent["json"]), self.rng)
            info = {"index": self.asked, "origin": "mutation", "parent": parent["key"]}
        self.asked += 1
        return Candidate(genome, o.fidelity, info)

    def tell(self, candidate: Candidate, result: Result) -> None:
        reward = result.reward if result.reward is not None else result.accuracy
        self.population.append({"key": candidate.key, "json": candidate.genome.to_json(),
                                "reward": float(reward)})
        while len(self.population) > self.options.population:
            self.population.popleft()

    def discard(self, candidate: Candidate) -> None:
        self.asked -= 1  # the rejected ask never happened: the next one draws again

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "asked": self.asked,
                "population": list(self.population)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        self.asked = state["asked"]
        self.population = deque(state["population"])
