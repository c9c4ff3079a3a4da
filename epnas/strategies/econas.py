"""EcoNAS hierarchical proxies on top of regularized evolution (Zhou et al., 2020).

Candidates come in generations of ``generation`` new genomes: random samples until
``population`` of them have been fully evaluated, then mutations of tournament winners
(``sample`` members of the population drawn at random, the best by reward wins), as in
:mod:`epnas.strategies.evolution`. A generation is evaluated level by level: every
genome at the cheapest fidelity ``levels[0]``, then only the best ``promote`` share (by
that level's reward, rounded, at least one) at ``levels[1]``, and so on. Only the
survivors of the last level join the population, as fully evaluated members; the
oldest member leaves when the population is full.

Levels are fidelity strings passed to the evaluator: on the NAS-Bench-201 table
``12ep`` then ``200ep``; with real training an EcoNAS reduced setting such as
``c=0.25,r=0.5,s=0.5,e=5`` (channel factor, resolution factor, sample ratio, epochs)
then ``full``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from epnas.spaces.registry import load_genome
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.trial import Candidate, Result

DEFAULT_LEVELS = {"nb201": ("12ep", "200ep")}
TRAINING_LEVELS = ("c=0.25,r=0.5,s=0.5,e=5", "full")  # every other space


class EcoNASOptions(StrategyOptions):
    population: int = Field(20, ge=2)  # P: fully evaluated members kept (the oldest leaves)
    sample: int = Field(5, ge=1)  # S: tournament size
    generation: int = Field(10, ge=1)  # new genomes evaluated at the first level per round
    promote: float = Field(0.5, gt=0, le=1)  # share of a level's genomes the next level gets
    levels: tuple[str, ...] | None = Field(None, min_length=1)  # fidelities, cheapest first
    #   (None: 12ep,200ep on nb201, c=0.25,r=0.5,s=0.5,e=5,full otherwise)

    @field_validator("levels", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        return group_levels(value) if isinstance(value, str | list | tuple) else value


def group_levels(value: str | Sequence[str]) -> tuple[str, ...]:
    """Levels from a flat comma-separated form (what ``--strategy-opt`` gives).

    ``KEY=VALUE`` items are one EcoNAS setting until a key repeats, so
    ``c=0.25,r=0.5,s=0.5,e=5,c=0.5,r=1,s=1,e=10,full`` is three levels; items without
    ``=`` (``12ep``, ``full``) are one level each. Already grouped levels stay as they are.
    """
    items = [v.strip() for item in ([value] if isinstance(value, str) else value)
             for v in str(item).split(",") if v.strip()]
    levels: list[list[str]] = []
    for item in items:
        key = item.partition("=")[0]
        current = levels[-1] if levels else None
        if ("=" in item and current and "=" in current[0]
                and key not in {v.partition("=")[0] for v in current}):
            current.append(item)
        else:
            levels.append([item])
    return tuple(",".join(level) for level in levels)


class EcoNAS(Strategy):
    """Evolution whose children climb a ladder of fidelities; only the best go up."""

    Options = EcoNASOptions
    options: EcoNASOptions

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.levels = self.options.levels or DEFAULT_LEVELS.get(space.name, TRAINING_LEVELS)
        self.report_fidelity = self.levels[-1]  # cheap levels rank, they do not report
        self.population: deque[dict[str, Any]] = deque()  # fully evaluated, oldest first
        self.round = 0
        self.level = 0
        self.cohort: list[dict[str, Any]] = []  # this level's genomes: json, key, origin
        self.asked = 0  # of the cohort at this level
        self.rewards: dict[int, float] = {}  # cohort position -> reward at this level
        self.entered = 0  # genomes that survived the last level, ever
        self.history: list[dict[str, float]] = []

    @property
    def fidelities(self) -> tuple[str, ...]:
        return self.levels

    def promoted(self, n: int) -> int:
        """How many of ``n`` genomes of a level the next level evaluates."""
        return max(1, min(n, round(self.options.promote * n)))

    def ask(self) -> Candidate | None:
        if not self.cohort:
            self._new_generation()
        if self.asked >= len(self.cohort):
            return None  # the level waits for its results before promoting
        member = self.cohort[self.asked]
        info = {"round": self.round, "level": self.level, "position": self.asked,
                "origin": member["origin"]}
        if "parent" in member:
            info["parent"] = member["parent"]
        self.asked += 1
        return Candidate(load_genome(member["json"]), self.levels[self.level], info)

    def tell(self, candidate: Candidate, result: Result) -> None:
        reward = result.reward if result.reward is not None else result.accuracy
        self.rewards[int(candidate.info["position"])] = float(reward)
        if len(self.rewards) < len(self.cohort):
            return
        ranked = sorted(range(len(self.cohort)), key=lambda i: (-self.rewards[i], i))
        if self.level + 1 < len(self.levels):
            keep = sorted(ranked[: self.promoted(len(ranked))])  # in generation order
            self.cohort = [self.cohort[i] for i in keep]
            self.level += 1
        else:
            for i in range(len(self.cohort)):
                self.population.append({**self.cohort[i], "reward": self.rewards[i]})
                while len(self.population) > self.options.population:
                    self.population.popleft()
            self.entered += len(self.cohort)
            self.history.append({"round": float(self.round),
                                 "best_reward": max(self.rewards.values()),
                                 "mean_reward": sum(self.rewards.values()) / len(self.rewards)})
            self.cohort, self.level = [], 0
            self.round += 1
        self.asked, self.rewards = 0, {}

    def discard(self, candidate: Candidate) -> None:
        # filters see genomes at their first level only; a new genome takes the place
        self.asked -= 1
        self.cohort[self.asked] = self._new_member()

    def _new_generation(self) -> None:
        self.cohort = [self._new_member() for _ in range(self.options.generation)]

    def _new_member(self) -> dict[str, Any]:
        """A random genome until the population is full, then a tournament winner's child."""
        o = self.options
        if self.entered < o.population:
            genome = self.space.sample(self.rng)
            return {"json": genome.to_json(), "key": genome.key, "origin": "random"}
        size = min(o.sample, len(self.population))
        picks = self.rng.choice(len(self.population), size=size, replace=False)
        parent = max((self.population[i] for i in sorted(picks)), key=lambda m: m["reward"])
        child = self.space.mutate(load_genome(parent["json"]), self.rng)
        return {"json": child.to_json(), "key": child.key, "origin": "mutation",
                "parent": parent["key"]}

    def stats(self) -> list[dict[str, float]]:
        return list(self.history)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "population": list(self.population),
                "round": self.round, "level": self.level, "cohort": list(self.cohort),
                "asked": self.asked, "rewards": [[k, v] for k, v in self.rewards.items()],
                "entered": self.entered, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        self.population = deque(state["population"])
        self.round, self.level = state["round"], state["level"]
        self.cohort, self.asked = list(state["cohort"]), state["asked"]
        self.rewards = {int(k): float(v) for k, v in state["rewards"]}
        self.entered, self.history = state["entered"], list(state["history"])

