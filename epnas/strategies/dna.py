"""DNA: block-wise search by distillation from a teacher, then one assembled network.

1. **Blocks.** The teacher's blocks (``(input shape, output shape)`` each) come from the
   study's evaluator: the ``distill`` evaluator's :meth:`block_plan`. With an evaluator
   that has none (the contract suite's synthetic one) the strategy plans the blocks of
   one random genome of the space on a 3x32x32 input, as a teacher of the space would.
2. **Rating.** For every block it draws ``draws`` random parts of that block's size
   (:meth:`~epnas.spaces.base.Space.sample_block`; analytic costs only, no training)
   and keeps ``per_block`` distinct ones aimed at the study's constraints (by default
   as many as the trial budget holds beside the assembly's trial: more rated parts
   give better assemblies, docs/search.md): the
   *reference* of a block is its drawn part with the least load (the sum over upper
   bounds on params, flops, bytes or memory of the part's cost over the bound); a
   part is kept when the network of it and the other blocks' references is no more in
   violation than the references' own network (feasible, when that one is), the
   reference first. So one feasible assembly is among the rated parts whenever the
   references make one; when their network exceeds an upper bound, no drawn parts can
   assemble under it and the strategy refuses before any training (one line). Each
   kept part is asked at fidelity ``block=K``; all are independent, so they run in
   parallel like any trials. A part's rating is its ``distill_loss`` (lower is better);
   with an evaluator that reports none, ``1 - accuracy``; a failed part is never chosen.
3. **Assembly.** Each block's ratings are first made comparable between blocks
   (``aggregate``, :func:`aggregated`: by default standardised within the block, so a
   block whose losses spread widely, e.g. over a parameter-free part, does not
   outweigh the others), then one part per block is chosen to minimise their sum under
   the study's constraints. The search is exact: a dynamic program over the blocks whose
   state is the previous block's output shape (a block's costs depend on its input
   channels), keeping per state only the choices no other choice dominates (a lower or
   equal summed rating and, for every cost a constraint bounds from above, lower or
   equal analytic costs; costs bounded from below or through ``intensity`` must be
   equal to dominate); the survivors are assembled and judged by the study's exact cost
   metrics. ``beam=N`` keeps only the N best-rated choices per block instead (faster,
   not exact). When no assembly is feasible the least-violating one is taken.
4. **End to end.** The assembled genome is asked once more at fidelity ``final``
   (``prediction`` by default): the ``distill`` evaluator trains it with labels like the
   ``training`` evaluator, and that trial is the run's best (``report_fidelity``).
   ``epnas retrain RUN_DIR`` then trains it with the full schedule.

The run's trials hold every part's rating (fidelity ``block=K``, metric
``distill_loss``, info ``block``); :meth:`stats` gives one row per block (best and
median rating), and the final trial's info records the chosen parts (``parts``, their
indices; ``part_keys``, their genomes' keys, by which the ``distill`` evaluator's
``init=parts`` finds their trained blocks) and their ratings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from pydantic import Field

from epnas.errors import EpnasError, GenomeError
from epnas.objective import Objective
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome
from epnas.strategies.base import SearchContext, Strategy, StrategyOptions
from epnas.trial import Candidate, Result

Shape3 = tuple[int, int, int]
Plan = list[tuple[Shape3, Shape3]]
FALLBACK_INPUT: Shape3 = (3, 32, 32)  # the planned input without a teacher
COMPONENTS = ("params", "flops", "bytes", "activations")  # additive over blocks
# The components each cost metric grows with (all but intensity monotonically).
DEPENDS = {"params": ("params",), "flops": ("flops",), "bytes": ("bytes",),
           "memory": ("params", "activations"), "intensity": ("flops", "bytes")}


UNBUDGETED_PER_BLOCK = 32  # parts rated per block when the study has no trial budget
Aggregate = Literal["sum", "log", "zscore", "rank"]  # how the blocks' ratings add up
AGGREGATES: tuple[str, ...] = get_args(Aggregate)


class DNAOptions(StrategyOptions):
    # distinct parts rated per block; None: every trial of the study's budget but the
    # assembled network's, spread evenly over the blocks (32 without a trial budget)
    per_block: int | None = Field(None, ge=1)
    # random parts drawn per block to aim them at constraints (at least 2 x per_block)
    draws: int = Field(200, ge=1)
    final: str = "prediction"  # fidelity of the assembled network's end-to-end trial
    beam: int | None = Field(None, ge=1)  # choices kept per block (None: exact)
    # how the blocks' ratings add up: each block's standardised (default), their raw
    # losses, their logarithms, or their ranks within the block (see ``aggregated``)
    aggregate: Aggregate = "zscore"


@dataclass(frozen=True)
class Assembly:
    """The chosen part of every block, its summed rating, and how it was found."""

    choice: tuple[int, ...]
    rating: float
    genome: Genome
    feasible: bool
    method: str


@dataclass(frozen=True)
class _Label:
    rating: float
    costs: tuple[float, ...]
    choice: tuple[int, ...]


def assemble(space: Space, plan: Plan, parts: Sequence[Sequence[Genome]],
             ratings: Sequence[Sequence[float]], objective: Objective,
             costs: Callable[[Genome], Mapping[str, float]], beam: int | None = None
             ) -> Assembly | None:
    """The best assembly of one part per block (module docs, step 3); None when a block
    has no rated part.

    Raises:
        EpnasError: a constraint on a metric the analytic costs do not give.
    """
    modes = _modes(objective)
    states: dict[Shape3, list[_Label]] = {plan[0][0]: [_Label(0.0, (0.0,) * 4, ())]}
    for k in range(len(plan)):
        grown: dict[Shape3, list[_Label]] = {}
        for shape, labels in states.items():
            for j, part in enumerate(parts[k]):
                if not math.isfinite(ratings[k][j]):
                    continue
                c = space.block_cost(part, k, shape)
                out = space.block_shape(part, k, shape)
                add = (c.params, c.flops, c.bytes, c.activations)
                grown.setdefault(out, []).extend(
                    _Label(label.rating + ratings[k][j],
                           tuple(a + b for a, b in zip(label.costs, add)), (*label.choice, j))
                    for label in labels)
        if not grown:
            return None
        states = {shape: _pareto(labels, modes) for shape, labels in grown.items()}
        if beam is not None:
            kept = sorted((label.rating, label.choice, shape)
                          for shape, labels in states.items() for label in labels)[:beam]
            keep = {(shape, choice) for _, choice, shape in kept}
            states = {shape: [lb for lb in labels if (shape, lb.choice) in keep]
                      for shape, labels in states.items()}
            states = {shape: labels for shape, labels in states.items() if labels}
    best: tuple[Any, ...] | None = None
    for label in sorted((lb for labels in states.values() for lb in labels),
                        key=lambda lb: (lb.rating, lb.choice)):
        try:
            genome = space.assemble([parts[k][j] for k, j in enumerate(label.choice)])
        except GenomeError:
            continue
        violation = sum(objective.violations(costs(genome)).values())
        rank = (violation > 0, violation, label.rating)
        if best is None or rank < best[0]:
            best = (rank, label, genome)
        if violation == 0:
            break  # sorted by rating: the first feasible one is the best
    if best is None:
        return None
    (infeasible, _, _), label, genome = best
    return Assembly(label.choice, label.rating, genome, not infeasible,
                    "exact" if beam is None else f"beam {beam}")


def _modes(objective: Objective) -> dict[str, str]:
    """How each cost component may prune: ``upper`` (lower is never worse), ``equal``
    (only equal values compare) or ``free`` (no constraint reads it)."""
    modes = dict.fromkeys(COMPONENTS, "free")
    for c in objective.constraints:
        if c.metric not in DEPENDS:
            raise EpnasError(f"the dna strategy assembles under constraints on the analytic "
                             f"costs ({', '.join(DEPENDS)}), not on {c.metric!r}")
        monotone = c.metric != "intensity" and c.low is None
        for component in DEPENDS[c.metric]:
            if not monotone or modes[component] == "equal":
                modes[component] = "equal"
            else:
                modes[component] = "upper"
    return modes


def _pareto(labels: list[_Label], modes: Mapping[str, str]) -> list[_Label]:
    """The labels no other label dominates (rating and constrained costs)."""
    checks = [(i, modes[name]) for i, name in enumerate(COMPONENTS) if modes[name] != "free"]

    def dominates(a: _Label, b: _Label) -> bool:
        return all(a.costs[i] <= b.costs[i] if mode == "upper" else a.costs[i] == b.costs[i]
                   for i, mode in checks)

    kept: list[_Label] = []
    for label in sorted(labels, key=lambda lb: (lb.rating, lb.choice)):
        if not any(dominates(other, label) for other in kept):
            kept.append(label)
    return kept


def aggregated(ratings: Sequence[Sequence[float]], how: str) -> list[list[float]]:
    """Every block's ratings made comparable between blocks before they are summed:
    ``sum`` keeps them; ``log`` takes their logarithm (the sum then ranks by the product
    of the losses, which no block's unit or scale sways); ``zscore`` subtracts the
    block's mean rating and divides by its standard deviation (over its finite
    ratings); ``rank`` replaces each by its rank within its block scaled to [0, 1]
    (ties share their mean rank). A failed part (inf) stays inf; a block whose finite
    ratings are all equal contributes 0."""
    if how == "sum":
        return [list(row) for row in ratings]
    out = []
    for row in ratings:
        values = np.array(row, dtype=float)
        finite = np.isfinite(values)
        scaled = np.full(len(values), math.inf)
        kept = values[finite]
        if how == "log":
            scaled[finite] = np.log(np.maximum(kept, 1e-12))
        elif how == "zscore":
            spread = kept.std()
            scaled[finite] = (kept - kept.mean()) / spread if spread > 0 else 0.0
        elif how == "rank":
            from scipy.stats import rankdata
            scaled[finite] = (rankdata(kept) - 1) / (len(kept) - 1) if len(kept) > 1 else 0.0
        else:
            raise EpnasError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
        out.append(scaled.tolist())
    return out


def rating(result: Result) -> float:
    """A part's rating: ``distill_loss``, else ``1 - accuracy``; inf when it failed."""
    if not result.ok:
        return math.inf
    value = result.metrics.get("distill_loss")
    if value is None:
        accuracy = result.metrics.get("accuracy")
        value = math.inf if accuracy is None else 1.0 - float(accuracy)
    value = float(value)
    return value if math.isfinite(value) else math.inf


class DNA(Strategy):
    """Block-wise distillation search: rate parts of every teacher block, assemble the
    best-rated feasible network, train it end to end (steps in the module docs)."""

    Options = DNAOptions
    options: DNAOptions
    # Parts never depend on results: workers take the next part as soon as one is done.
    lookahead = 32
    auto_preset = False

    supported_spaces = ("layerwise", "multistage")  # the built-in spaces with block hooks

    @classmethod
    def supports(cls, space: Space) -> bool:
        """Every space that implements the block hooks (a user's too)."""
        return type(space).blocks is not Space.blocks

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.report_fidelity = self.options.final
        self.plan: Plan | None = None
        self.parts: list[list[Genome]] = []
        self.ratings: list[list[float | None]] = []
        self.rewards: list[list[float | None]] = []  # the study's reward of each part
        self.asked = 0
        self.final: Candidate | None = None
        self.final_told = False
        self.gave_up: str | None = None

    # --- the plan ------------------------------------------------------------------

    def attach(self, context: SearchContext) -> None:
        """Also refuse, before the run starts, an evaluator that cannot rate blocks."""
        super().attach(context)
        evaluator = context.evaluator
        if evaluator is not None and not callable(getattr(evaluator, "block_plan", None)):
            try:
                evaluator.check_fidelity("block=0")
            except EpnasError:
                raise EpnasError("the dna strategy rates blocks by distillation: use "
                                 "--evaluator distill --evaluator-opt teacher=PATH") from None

    def _teacher_plan(self) -> Plan:
        evaluator = self.context.evaluator
        if evaluator is not None and callable(getattr(evaluator, "block_plan", None)):
            return [(tuple(i), tuple(o)) for i, o in evaluator.block_plan()]  # type: ignore[misc]
        shape, plan = FALLBACK_INPUT, []
        for k, part in enumerate(self.space.blocks(self.space.sample(self.rng))):
            out = self.space.block_shape(part, k, shape)
            plan.append((shape, out))
            shape = out
        return plan

    def _start(self) -> None:
        """Plan the blocks and draw every block's parts (once, before the first ask)."""
        self.plan = self._teacher_plan()
        count = len(self.plan)
        wanted = self._per_block(count)
        pools = []
        for k, (inp, out) in enumerate(self.plan):
            drawn: dict[str, Genome] = {}
            for _ in range(max(self.options.draws, 2 * wanted[k])):
                part = self.space.sample_block(self.rng, k, count, inp, out)
                drawn.setdefault(part.key, part)
            pools.append(list(drawn.values()))
        self.parts = self._aimed(pools, wanted)
        self.ratings = [[None] * len(row) for row in self.parts]
        self.rewards = [[None] * len(row) for row in self.parts]

    def _costs(self, genome: Genome) -> Mapping[str, float]:
        """The study's analytic costs of an assembled genome (the plan's input without one)."""
        if self.context.costs is not None:
            return self.context.costs(genome)
        assert self.plan is not None
        return self.space.cost(genome, self.plan[0][0], 10).as_dict()

    def _per_block(self, blocks: int) -> list[int]:
        """Parts to rate in each block: ``per_block``, or every trial of the budget but the
        assembled network's, spread evenly (the first blocks take the remainder).

        Raises:
            EpnasError: the budget cannot hold one part per block and the assembly.
        """
        budget = self.context.trials
        if budget is not None and budget < blocks + 1:
            raise EpnasError(f"the dna strategy needs at least {blocks + 1} trials (one part "
                             f"for each of the teacher's {blocks} blocks and the assembled "
                             f"network); the budget is {budget}")
        if self.options.per_block is not None or budget is None:
            return [self.options.per_block or UNBUDGETED_PER_BLOCK] * blocks
        each, extra = divmod(budget - 1, blocks)
        return [each + (k < extra) for k in range(blocks)]

    def _aimed(self, pools: list[list[Genome]], wanted: list[int]) -> list[list[Genome]]:
        """``wanted[k]`` parts of block k's pool aimed at the constraints (step 2).

        Raises:
            EpnasError: the references' network exceeds an upper bound.
        """
        objective = self.context.objective
        if not objective.constraints:
            return [pool[:n] for pool, n in zip(pools, wanted)]
        plan = self.plan
        assert plan is not None
        bounds = [(c.metric, c.high) for c in objective.constraints
                  if c.high is not None and c.metric in DEPENDS and c.metric != "intensity"]

        def load(part: Genome, k: int) -> float:
            cost = self.space.block_cost(part, k, plan[k][0]).as_dict()
            return sum(cost[metric] / high for metric, high in bounds)

        references = [min(pool, key=lambda part, k=k: load(part, k))
                      for k, pool in enumerate(pools)]

        def violation(parts: list[Genome]) -> tuple[float, dict[str, float]]:
            metrics = self._costs(self.space.assemble(parts))
            return sum(objective.violations(metrics).values()), dict(metrics)

        base, metrics = violation(references)
        over = [(metric, high) for metric, high in bounds if metrics[metric] > high]
        if over:
            text = ", ".join(f"{m} {metrics[m]:,.0f} > {high:,.0f}" for m, high in over)
            raise EpnasError(f"the dna strategy can assemble no network under the constraints: "
                             f"the cheapest of {self.options.draws} random parts per block "
                             f"assemble to {text}; loosen the constraint, or draw more "
                             "(--strategy-opt draws=N) or smaller parts (--space-opt)")
        kept = []
        for k, pool in enumerate(pools):
            row = [references[k]]
            for part in pool:
                if len(row) == wanted[k]:
                    break
                if part.key != references[k].key and violation(
                        [*references[:k], part, *references[k + 1:]])[0] <= base:
                    row.append(part)
            kept.append(row)
        return kept

    @property
    def fidelities(self) -> tuple[str, ...]:
        """The final fidelity (a study checks it with its evaluator before the first
        trial); the ``block=K`` fidelities are the teacher's, known once it is loaded."""
        return (self.options.final,)

    @property
    def _queue(self) -> list[tuple[int, int]]:
        return [(k, j) for k, parts in enumerate(self.parts) for j in range(len(parts))]

    def planned_trials(self) -> tuple[int, str] | None:
        if self.plan is None:
            if self.context.costs is None:  # not attached to a study: the plan is not known
                return None
            self._start()
        assert self.plan is not None
        return (len(self._queue) + 1,
                f"{len(self.plan)} blocks x up to {max(map(len, self.parts))} parts "
                "+ 1 assembled")

    # --- ask / tell ----------------------------------------------------------------

    def ask(self) -> Candidate | None:
        if self.plan is None:
            self._start()
        queue = self._queue
        if self.asked < len(queue):
            k, j = queue[self.asked]
            self.asked += 1
            return Candidate(self.parts[k][j], f"block={k}", {"block": k, "part": j})
        if self.final is not None or self.gave_up is not None:
            return None
        if any(r is None for row in self.ratings for r in row):
            return None  # waiting for the ratings
        self._assemble()
        return self.final

    def _assemble(self) -> None:
        plan = self.plan
        assert plan is not None
        ratings = [[math.inf if r is None else r for r in row] for row in self.ratings]
        found = assemble(self.space, plan, self.parts,
                         aggregated(ratings, self.options.aggregate), self.context.objective,
                         self._costs, self.options.beam)
        if found is None:
            self.gave_up = "a block has no part that was rated (every one failed)"
            return
        chosen = [ratings[k][j] for k, j in enumerate(found.choice)]
        info = {"origin": "assembled", "parts": list(found.choice),
                "part_keys": [self.parts[k][j].key for k, j in enumerate(found.choice)],
                "ratings": chosen,
                "rating": sum(chosen), "aggregate": self.options.aggregate,
                "aggregated_rating": found.rating,
                "assembly": found.method,
                "feasible_plan": found.feasible}
        self.final = Candidate(found.genome, self.options.final, info)

    def tell(self, candidate: Candidate, result: Result) -> None:
        if candidate.info.get("origin") == "assembled":
            self.final_told = True
            return
        k, j = int(candidate.info["block"]), int(candidate.info["part"])
        self.ratings[k][j] = rating(result)
        self.rewards[k][j] = float(result.reward or 0.0)

    @property
    def done(self) -> bool:
        return self.final_told or self.gave_up is not None

    def stats(self) -> list[dict[str, float]]:
        """One row per block with a rated part (the report plots them as episodes): parts
        rated, best and median rating, and their mean reward."""
        rows = []
        for k, (row, rewards) in enumerate(zip(self.ratings, self.rewards)):
            rated = [r for r in row if r is not None and math.isfinite(r)]
            if rated:
                rows.append({"episode": float(k), "block": float(k), "rated": float(len(rated)),
                             "best_rating": min(rated), "median_rating": float(np.median(rated)),
                             "mean_reward": float(np.mean([w for w in rewards if w is not None]))})
        return rows

    # --- resume --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(),
                "plan": None if self.plan is None else [[list(i), list(o)] for i, o in self.plan],
                "parts": [[p.to_json() for p in row] for row in self.parts],
                "ratings": [[None if r is None else float(r) for r in row]
                            for row in self.ratings],
                "rewards": [list(row) for row in self.rewards],
                "asked": self.asked,
                "final": None if self.final is None else self.final.to_dict(),
                "final_told": self.final_told, "gave_up": self.gave_up}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        plan = state["plan"]
        self.plan = None if plan is None else [(tuple(i), tuple(o)) for i, o in plan]  # type: ignore[misc]
        self.parts = [[load_genome(text) for text in row] for row in state["parts"]]
        self.ratings = [list(row) for row in state["ratings"]]
        self.rewards = [list(row) for row in state["rewards"]]
        self.asked = state["asked"]
        self.final = None if state["final"] is None else Candidate.from_dict(state["final"])
        self.final_told, self.gave_up = state["final_told"], state["gave_up"]
