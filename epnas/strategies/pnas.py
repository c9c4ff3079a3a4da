"""PNAS: progressive sequential model-based optimisation (Liu et al., 2018).

Cells grow in complexity one unit at a time (``cellwise``: branches; ``nb201``:
non-``none`` edges). The first round evaluates the simplest cells (every one-edge cell
on ``nb201``; up to ``initial`` random one-branch cells on ``cellwise``). Each later
round fits a surrogate on every result so far, ranks all expansions (one more unit)
of the cells evaluated in the previous round, and evaluates the ``beam`` (K) best; those
are the next round's cells. Once the cells cannot grow, the search goes on at the top
complexity: each round the surrogate ranks same-size mutations of the ``beam`` best
cells of that size.

The surrogate is an ensemble of small MLPs (PNAS's MLP predictor) over a one-hot
encoding of ``space.encode``, refit from scratch on all results each round; it predicts
the reward, so constraints steer it through the soft penalty.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from epnas.spaces.base import Space
from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.strategies.surrogate import Encoder, Surrogate
from epnas.trial import Candidate, Result


class PNASOptions(StrategyOptions):
    beam: int = Field(10, ge=1)  # K: cells evaluated per round (PNAS: 256)
    initial: int = Field(32, ge=1)  # most cells of the first (simplest) round
    max_expansions: int = Field(1000, ge=1)  # expansions ranked per round (sampled above)
    ensemble: int = Field(5, ge=1)  # MLPs in the surrogate
    hidden: int = Field(64, ge=1)  # hidden units per MLP
    fit_steps: int = Field(100, ge=1)  # full-batch Adam steps per refit
    lr: float = Field(0.05, gt=0)  # Adam learning rate of the surrogate
    fidelity: str | None = None  # evaluator fidelity (None: the evaluator's default)


def expansions(space: Space, genome: Genome, rng: np.random.Generator, limit: int,
               grow: int = 1) -> Iterator[Genome]:
    """The genomes one insert away whose size is ``grow`` more (random ones past ``limit``).

    ``grow=1``: every expansion by one unit; ``grow=0``: same-size variants (on
    ``nb201``, an edge given another op).
    """
    actions = space.actions(genome)
    size = space.size(genome)
    leaves: list[dict[str, Any]] = []

    def walk(chosen: dict[str, Any]) -> bool:  # False once past the limit
        decision = actions.next_decision(chosen)
        if decision is None:
            leaves.append(chosen)
            return len(leaves) <= limit
        for choice, legal in zip(decision.choices, decision.mask):
            wanted = legal and (decision.name != "kind" or choice == "insert")
            if wanted and not walk({**chosen, decision.name: choice}):
                return False
        return True

    if not walk({}):
        leaves = [_random_insert(actions, rng) for _ in range(limit)]
    for chosen in leaves:
        grown = space.apply(genome, actions.action(chosen))
        if space.size(grown) == size + grow:
            yield grown


def smallest_depth(space: Space) -> int:
    """The fewest units (at least 1) a genome of ``space`` has: ``sample`` refuses fewer
    (``multistage`` needs a block in every stage)."""
    probe = np.random.default_rng(0)  # leaves the strategy's generator untouched
    for depth in range(1, space.size(space.sample(probe)) + 1):
        try:
            space.sample(probe, depth=depth)
        except ValueError:
            continue
        return depth
    raise ValueError(f"the {space.name} space samples no genome of a given size")


def _random_insert(actions: Any, rng: np.random.Generator) -> dict[str, Any]:
    chosen: dict[str, Any] = {"kind": "insert"}
    while (decision := actions.next_decision(chosen)) is not None:
        legal = [c for c, ok in zip(decision.choices, decision.mask) if ok]
        chosen[decision.name] = legal[int(rng.integers(len(legal)))]
    return chosen


class PNAS(Strategy):
    """Progressive SMBO: grow cells, rank expansions with a learned surrogate, keep K."""

    Options = PNASOptions
    options: PNASOptions
    supported_spaces = ("cellwise", "nb201", "multistage")
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"beam": 256, "ensemble": 5},
        # NB201 budgets are 100-300 queries: a narrow beam reaches full cells in ~80
        "tabular": {"beam": 10},
    }

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.encoder = Encoder(space)
        self.results: list[dict[str, Any]] = []  # every told candidate: json, key, reward
        self.round = -1  # the round being asked (none yet)
        self.queue: list[str] = []  # genome JSON of this round still to ask, best first
        self.reserve: list[str] = []  # the next-ranked ones, replacing discarded asks
        self.outstanding = 0
        self.evaluated_this_round: list[str] = []  # the next round expands these
        self.exhausted = False  # no unevaluated cell was left to rank

    def ask(self) -> Candidate | None:
        if not self.queue and self.outstanding == 0 and not self.exhausted:
            self._plan()
        if not self.queue:
            return None
        text = self.queue.pop(0)
        self.outstanding += 1
        return Candidate(load_genome(text), self.options.fidelity,
                         {"round": self.round, "size": self.space.size(load_genome(text))})

    def tell(self, candidate: Candidate, result: Result) -> None:
        reward = result.reward if result.reward is not None else result.accuracy
        self.results.append({"json": candidate.genome.to_json(), "key": candidate.key,
                             "tokens": self.space.encode(candidate.genome),
                             "reward": float(reward), "size": self.space.size(candidate.genome)})
        self.evaluated_this_round.append(candidate.genome.to_json())
        self.outstanding -= 1

    def discard(self, candidate: Candidate) -> None:
        self.outstanding -= 1
        if self.reserve:  # the next-ranked cell takes the rejected one's place
            self.queue.append(self.reserve.pop(0))

    def _plan(self) -> None:
        """Choose the next round's cells (the module docstring)."""
        o = self.options
        seen = {r["key"] for r in self.results}
        self.round += 1
        if self.round == 0:
            pool = self._simplest()
            ranked = [pool[i] for i in self.rng.permutation(len(pool))]
            take = o.initial
        else:
            parents = [load_genome(t) for t in self.evaluated_this_round]
            each = max(1, o.max_expansions // max(1, len(parents)))
            pool = self._unique((g for p in parents
                                 for g in expansions(self.space, p, self.rng, each)), seen)
            if not pool:  # the cells cannot grow: go on around the best of the largest
                pool = self._around_best(seen)
            ranked = self._rank(pool)
            take = o.beam
        self.evaluated_this_round = []
        self.queue = [g.to_json() for g in ranked[:take]]
        # a few next-ranked cells replace asks a filter rejects (kept small: it is state)
        self.reserve = [g.to_json() for g in ranked[take: take + 4 * o.beam]]
        self.exhausted = not self.queue

    def _around_best(self, seen: set[str]) -> list[Genome]:
        """Unseen same-size variants of the ``beam`` best cells of the top size.

        Variants are one insert away (another op on an edge); where an insert always
        grows the cell (``cellwise``), mutations of the same size. When the best cells'
        neighbourhoods are all seen, the next best ``beam`` cells are tried, and so on.
        """
        top = max(r["size"] for r in self.results)
        ranked = sorted((r for r in self.results if r["size"] == top), key=lambda r: -r["reward"])
        beam = self.options.beam
        for start in range(0, len(ranked), beam):
            best = [load_genome(r["json"]) for r in ranked[start: start + beam]]
            each = max(1, self.options.max_expansions // len(best))
            pool = self._unique((v for g in best
                                 for v in expansions(self.space, g, self.rng, each, grow=0)),
                                seen)
            if not pool:
                mutants = (self.space.mutate(g, self.rng) for g in best for _ in range(20))
                pool = self._unique((m for m in mutants if self.space.size(m) == top), seen)
            if pool:
                return pool
        return []

    def _simplest(self) -> list[Genome]:
        try:
            empty = self.space.sample(self.rng, depth=0)
        except ValueError:  # a cell needs units: sample the smallest cells
            depth = smallest_depth(self.space)
            return self._unique((self.space.sample(self.rng, depth=depth)
                                 for _ in range(4 * self.options.initial)), set())
        return self._unique(expansions(self.space, empty, self.rng, self.options.max_expansions),
                            set())

    @staticmethod
    def _unique(genomes: Iterator[Genome] | Any, seen: set[str]) -> list[Genome]:
        out: dict[str, Genome] = {}
        for genome in genomes:
            if genome.key not in seen:
                out.setdefault(genome.key, genome)
        return list(out.values())

    def _rank(self, pool: list[Genome]) -> list[Genome]:
        """``pool`` sorted by the surrogate's predicted reward, best first."""
        if not pool:
            return []
        o = self.options
        x = self.encoder.tokens([r["tokens"] for r in self.results])
        y = np.array([r["reward"] for r in self.results])
        surrogate = Surrogate(o.ensemble, o.hidden, o.fit_steps, o.lr,
                              seed=int(self.rng.integers(2**31))).fit(x, y)
        predicted = surrogate.predict(self.encoder(pool)).tolist()
        order = sorted(range(len(pool)), key=lambda i: (-predicted[i], i))
        return [pool[i] for i in order]

    @property
    def done(self) -> bool:
        return self.exhausted

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "results": list(self.results), "round": self.round,
                "queue": list(self.queue), "reserve": list(self.reserve),
                "outstanding": self.outstanding,
                "evaluated_this_round": list(self.evaluated_this_round),
                "exhausted": self.exhausted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        self.results, self.round = list(state["results"]), state["round"]
        self.queue, self.reserve = list(state["queue"]), list(state["reserve"])
        self.outstanding = state["outstanding"]
        self.evaluated_this_round = list(state["evaluated_this_round"])
        self.exhausted = state["exhausted"]
