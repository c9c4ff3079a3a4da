"""Contract checks for plug-in authors: the suites epnas runs on its own spaces,
strategies and evaluators, runnable on any object (yours too).

.. code-block:: python

    from epnas.testing import check_evaluator, check_space, check_strategy

    check_space(epnas.spaces.get("my_package.spaces:MacroSpace"))
    check_strategy("evolution", "my_package.spaces:MacroSpace")
    check_evaluator(MyEvaluator(), epnas.spaces.get("layerwise"))

Each check runs its properties in order (or the ``properties`` named) and raises
:class:`AssertionError` naming the first one that fails, e.g. ``space 'macro':
property 'cost' failed: params 1,234 != 1,240 of the built network at (3, 32, 32)``;
an exception a property raises is reported the same way (chained, for its traceback).
The properties are listed in :data:`SPACE_PROPERTIES`, :data:`STRATEGY_PROPERTIES` and
:data:`EVALUATOR_PROPERTIES`; the project's own tests run every one on every
registered space, strategy and evaluator.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from epnas.errors import EpnasError, GenomeError
from epnas.evaluators.base import Evaluator
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.objective import Constraint, Objective
from epnas.spaces.base import Space
from epnas.spaces.genome import FORMAT_VERSION, SCALE_CHOICES, Action, Decision, Genome
from epnas.spaces.graph import Graph
from epnas.spaces.registry import get as get_space
from epnas.spaces.registry import load_genome, space_of
from epnas.strategies.base import Strategy
from epnas.strategies.base import get as get_strategy
from epnas.trial import Candidate, Result

__all__ = ["EVALUATOR_PROPERTIES", "SPACE_PROPERTIES", "STRATEGY_PROPERTIES", "Run",
           "check_cost", "check_evaluator", "check_space", "check_strategy", "checkpoint",
           "drive", "measure"]

SEED = 1234
SHAPES = ((1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 9, 13))  # odd sizes test the join rule
BUDGET = 24  # trials a strategy is driven for
CHAIN = 30  # actions applied in a row by the ``chains`` property


def _require(condition: object, message: str) -> None:
    """``assert`` that survives ``python -O``."""
    if not condition:
        raise AssertionError(message)


def _run(subject: str, checks: Mapping[str, Callable[[], None]],
         properties: Iterable[str] | None) -> None:
    wanted = list(checks) if properties is None else list(properties)
    unknown = [p for p in wanted if p not in checks]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(checks)}")
    for name in wanted:
        try:
            checks[name]()
        except Exception as exc:  # any failure of a property is that property's failure
            text = str(exc) if isinstance(exc, AssertionError) else \
                f"{type(exc).__name__}: {exc}"
            raise AssertionError(f"{subject}: property {name!r} failed: {text}") from exc


# --- costs ------------------------------------------------------------------------------


def measure(genome: Genome, input_shape: tuple[int, int, int],
            num_classes: int = 10) -> tuple[int, int]:
    """(parameters, forward FLOPs at batch 1) of ``genome``'s built network, measured by
    torch on the meta device (they depend on shapes only)."""
    return _measure(space_of(genome), genome, input_shape, num_classes)


def check_cost(genome: Genome, input_shape: tuple[int, int, int] = (3, 32, 32),
               num_classes: int = 10) -> None:
    """Raise :class:`AssertionError` unless the analytic cost of ``genome`` matches its
    built network: the same parameter count, FLOPs within 1 %."""
    _check_cost(space_of(genome), genome, input_shape, num_classes)


def _measure(space: Space, genome: Genome, input_shape: tuple[int, int, int],
             num_classes: int) -> tuple[int, int]:
    with torch.device("meta"):
        model = space.build(genome, input_shape, num_classes).eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(torch.empty(1, *input_shape))
    _require(tuple(out.shape) == (1, num_classes),
             f"the network outputs {tuple(out.shape)} for one image, not (1, {num_classes})")
    return params, counter.get_total_flops()


def _check_cost(space: Space, genome: Genome, input_shape: tuple[int, int, int],
                num_classes: int = 10) -> None:
    cost = space.cost(genome, input_shape, num_classes)
    params, flops = _measure(space, genome, input_shape, num_classes)
    where = f"at input {input_shape} for {genome.to_json()}"
    _require(cost.params == params,
             f"cost params {cost.params:,} != {params:,} of the built network {where}")
    _require(abs(cost.flops - flops) <= 0.01 * flops,
             f"cost flops {cost.flops:,} != {flops:,} of the built network {where}")


# --- spaces -----------------------------------------------------------------------------


def _space_checks(space: Space, seed: int) -> dict[str, Callable[[], None]]:
    def rng() -> np.random.Generator:
        return np.random.default_rng(seed)

    def name() -> None:
        _require(space.name, "the space has no name: create it with epnas.spaces.get(NAME or "
                             "'package.module:Class') so that its genomes name it")
        again = get_space(space.name, **space.options.model_dump())
        _require(type(again) is type(space) and again == space,
                 f"epnas.spaces.get({space.name!r}) makes another space")

    def sample() -> None:
        r = rng()
        for _ in range(6):
            genome = space.sample(r)
            space.validate(genome)
            params = getattr(type(genome), "__dataclass_params__", None)
            _require(isinstance(genome, Genome) and params is not None and params.frozen,
                     f"a genome must be a frozen dataclass subclassing Genome, got "
                     f"{type(genome).__name__}")
            _require(genome.space == space.name and genome.options == space.options,
                     "a sampled genome does not name this space and its options")
            text = genome.to_json()
            data = json.loads(text)
            _require(data["format"] == FORMAT_VERSION and data["space"] == space.name
                     and data["options"] == space.options.model_dump(mode="json"),
                     "genome JSON must name its format, space and options")
            loaded = load_genome(text)
            _require(loaded == genome and loaded.key == genome.key
                     and loaded.to_json() == text,
                     f"the genome does not round-trip through JSON: {text}")
        first = [space.sample(np.random.default_rng(7)).key for _ in range(3)]
        again = [space.sample(np.random.default_rng(7)).key for _ in range(3)]
        _require(first == again, "the same seed sampled other genomes")

    def depth() -> None:
        r = rng()
        size = space.size(space.sample(r))
        _require(space.size(space.sample(r, depth=size)) == size,
                 f"sample(depth={size}) made a genome of another size")

    def cost() -> None:
        r = rng()
        for _ in range(6):
            genome = space.sample(r)
            for shape in SHAPES:
                _check_cost(space, genome, shape)

    def forward() -> None:
        genome = space.sample(rng())
        model = space.build(genome, (3, 16, 16), 7).to(memory_format=torch.channels_last)
        x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
        out = model(x)
        _require(out.shape == (4, 7) and torch.isfinite(out).all(),
                 f"a batch of 4 gave {tuple(out.shape)} outputs (wanted (4, 7), finite)")
        out.sum().backward()
        _require(all(p.grad is None or torch.isfinite(p.grad).all()
                     for p in model.parameters()), "a gradient is not finite")

    def tokens() -> None:
        r = rng()
        width = len(space.token_fields)
        _require(width > 0, "token_fields is empty")
        for _ in range(20):
            genome = space.sample(r)
            ids = space.encode(genome)
            _require(len(ids) % width == 0,
                     f"{len(ids)} tokens is not a multiple of len(token_fields) = {width}")
            _require(all(isinstance(t, int) and 0 <= t < space.vocab_size for t in ids),
                     f"tokens {ids} are not ints in 0..vocab_size - 1 = {space.vocab_size - 1}")
            _require(space.decode(ids).key == genome.key, "decode(encode(genome)) differs")

    def mutate() -> None:
        r = rng()
        genome = space.sample(r)
        for _ in range(50):
            child = space.mutate(genome, r)
            space.validate(child)
            _require(child.key != genome.key, "mutate returned the same genome")
            genome = child

    def actions() -> None:
        r = rng()
        vocabulary = space.decision_vocabulary()
        for i in range(30):
            genome = space.sample(r)
            acts = space.actions(genome)
            for decision in acts.scale:
                _require(decision.name == "scale" and decision.choices == SCALE_CHOICES
                         and decision.mask[0],
                         "a scale decision must be named 'scale', have the choices "
                         "SCALE_CHOICES and allow 'keep'")
            chosen: dict[str, Any] = {}
            while (decision := acts.next_decision(chosen)) is not None:
                _check_decision(decision, vocabulary)
                chosen[decision.name] = decision.sample(r)
            result = space.apply(genome, acts.action(chosen))
            _require(isinstance(result, Genome), "apply did not return a genome")
            if i == 0:  # every legal kind, completed at random, applies cleanly
                for choice in acts.next_decision({}).legal:  # type: ignore[union-attr]
                    for _ in range(10):
                        chosen = {"kind": choice}
                        while (decision := acts.next_decision(chosen)) is not None:
                            chosen[decision.name] = decision.sample(r)
                        space.validate(space.apply(genome, acts.action(chosen)))

    def chains() -> None:
        r = rng()
        for _ in range(2):
            genome = space.sample(r)
            for _ in range(CHAIN):
                genome = space.apply(genome, _random_action(space, genome, r))
                space.validate(genome)
            _require(load_genome(genome.to_json()) == genome,
                     "a transformed genome does not round-trip through JSON")
            for shape in ((1, 8, 8), (3, 11, 9)):
                _check_cost(space, genome, shape)

    def foreign() -> None:
        other = get_space("nb201" if space.name != "nb201" else "layerwise")
        genome = other.sample(rng())
        try:
            space.validate(genome)
        except GenomeError as exc:
            _require("space" in str(exc), f"the error does not name the space: {exc}")
        else:
            raise AssertionError(f"validate accepted a genome of space {other.name!r}")

    def hooks() -> None:
        genome = space.sample(rng())
        _require(isinstance(space.describe(genome), str), "describe did not return a str")
        steps = space.steps_per_episode
        _require(isinstance(steps, int) and steps >= 1, "steps_per_episode must be an int >= 1")
        model = space.build(genome, (3, 16, 16), 7)
        units = space.sharing_keys(genome, model)
        if units is not None:
            inside = {id(m) for m in model.modules()}
            for key, modules in units.items():
                _require(isinstance(key, str) and all(
                    isinstance(p, str) and id(m) in inside for p, m in modules.items()),
                    f"sharing key {key!r} must map name prefixes to modules of the network")
        for shape in ((3, 16, 16), None):
            graph = space.graph(genome, shape, 7 if shape else None)
            if graph is not None:
                _require(isinstance(graph, Graph), "graph must return an epnas Graph or None")
                _require(all(0 <= e.src < e.dst < len(graph.nodes) for e in graph.edges),
                         "graph edges must run from a node to a later one")

    return {"name": name, "sample": sample, "depth": depth, "cost": cost, "forward": forward,
            "tokens": tokens, "mutate": mutate, "actions": actions, "chains": chains,
            "foreign": foreign, "hooks": hooks}


# (the check functions only close over their arguments: listing them runs nothing)
SPACE_PROPERTIES: tuple[str, ...] = tuple(_space_checks(None, 0))  # type: ignore[arg-type]
"""The properties :func:`check_space` checks, in order."""


def _check_decision(decision: Decision, vocabulary: Mapping[str, Sequence[Any]]) -> None:
    _require(isinstance(decision, Decision) and any(decision.mask),
             f"decision {decision!r} has no legal choice")
    _require(tuple(decision.choices) == tuple(vocabulary.get(decision.name, ())),
             f"decision {decision.name!r} does not use decision_vocabulary()[{decision.name!r}]")
    probs = decision.probs()
    _require(np.isclose(probs.sum(), 1.0) and all(
        p == 0 for p, ok in zip(probs, decision.mask) if not ok),
        f"decision {decision.name!r}: its prior puts weight on an illegal choice")


def _random_action(space: Space, genome: Genome, rng: np.random.Generator) -> Action:
    """One legal action: a scale decision of a random group, or an insert decision."""
    actions = space.actions(genome)
    if actions.scale and rng.random() < 0.5:
        group = int(rng.integers(len(actions.scale)))
        return actions.scale_actions(["keep"] * group + [actions.scale[group].sample(rng)])[-1]
    return actions.sample_insert(rng)


def check_space(space: Space, *, properties: Iterable[str] | None = None,
                seed: int = SEED) -> None:
    """Check that ``space`` keeps the space contract.

    Args:
        space: the space, as made by ``epnas.spaces.get`` (its genomes must name it).
        properties: the :data:`SPACE_PROPERTIES` to check (None: all, in order).
        seed: seeds the random genomes.

    Raises:
        AssertionError: naming the first property that fails.
    """
    _run(f"space {space.name!r}", _space_checks(space, seed), properties)


# --- strategies -------------------------------------------------------------------------


@dataclass
class Run:
    """What a driven strategy asked for and what it was told, in ask order."""

    candidates: list[Candidate] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    @property
    def asks(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.candidates]


def drive(strategy: Strategy, evaluator: Evaluator, objective: Objective, n_trials: int,
          batch: int = 4) -> Run:
    """Run ``strategy`` the way the inline Study does, until ``n_trials`` or ``done``.

    Asks up to ``batch`` candidates at a time, evaluates them, scores every result with
    ``objective`` and tells them in ask order.
    """
    run = Run()
    while len(run.candidates) < n_trials and not strategy.done:
        asked = strategy.ask_batch(min(batch, n_trials - len(run.candidates)))
        _require(asked or strategy.done,
                 "the strategy asked for nothing with no results outstanding and is not done")
        for candidate in asked:
            result = objective.score(evaluator.evaluate(candidate))
            strategy.tell(candidate, result)
            run.candidates.append(candidate)
            run.results.append(result)
    return run


def checkpoint(strategy: Strategy) -> dict[str, Any]:
    """``state_dict`` through ``torch.save`` and ``torch.load(weights_only=True)``, as the
    store keeps it (never a pickle); the state must come back equal."""
    state = strategy.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    _require(_same(loaded, state), "state_dict changed through torch.save / torch.load")
    return loaded


def _same(a: Any, b: Any) -> bool:
    """Deep equality of plain data and tensors (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _half_feasible(space: Space, evaluator: Evaluator) -> Objective:
    """A params bound at the median of a few random genomes: about half are infeasible."""
    rng = np.random.default_rng(0)
    params = [space.cost(space.sample(rng), evaluator.input_shape, evaluator.num_classes).params
              for _ in range(9)]
    return Objective((Constraint("params", high=float(np.median(params))),))


def _strategy_checks(make: Callable[..., Strategy], space: Space, evaluator: Evaluator,
                     objective: Objective) -> dict[str, Callable[[], None]]:
    def run(strategy: Strategy, n: int, batch: int = 4, on: Evaluator | None = None) -> Run:
        return drive(strategy, on or evaluator, objective, n, batch)

    def score(candidate: Candidate) -> Result:
        return objective.score(evaluator.evaluate(candidate))

    def asks() -> None:
        strategy = make()
        driven = run(strategy, BUDGET)
        _require(driven.candidates, "the strategy asked for nothing")
        for candidate in driven.candidates:
            _require(candidate.genome.space == space.name, "a candidate of another space")
            space.validate(candidate.genome)
            _require(candidate.fidelity is None or isinstance(candidate.fidelity, str),
                     "a fidelity must be a str or None")
            data = json.loads(json.dumps(candidate.to_dict(), allow_nan=False))
            _require(data == candidate.to_dict(), "info must be JSON-native (lists, not tuples)")
            _require(Candidate.from_dict(data).to_dict() == candidate.to_dict(),
                     "a candidate does not round-trip through Candidate.from_dict")
        if strategy.done:
            _require(strategy.ask() is None and strategy.ask_batch(3) == [],
                     "a done strategy still asks")
        else:
            _require(len(driven.candidates) == BUDGET, "the strategy stopped without being done")

    def seeded() -> None:
        _require(run(make(seed=3), BUDGET).asks == run(make(seed=3), BUDGET).asks,
                 "the same seed asked for other candidates")

    def tell() -> None:
        strategy = make()
        batch = strategy.ask_batch(4)
        before = checkpoint(strategy)
        strategy.tell(batch[0], score(batch[0]))
        _require(not _same(checkpoint(strategy), before), "tell left no trace in state_dict")
        for candidate in batch[1:]:
            strategy.tell(candidate, score(candidate))
        run(strategy, BUDGET)
        stats = strategy.stats()
        _require(isinstance(stats, list) and all(
            isinstance(k, str) and isinstance(v, int | float) for row in stats
            for k, v in row.items()), "stats() must be a list of {str: number} rows")

    def resume() -> None:
        for split in (6, 8):
            original = make(seed=5)
            first = run(original, split)
            state = checkpoint(original)
            rest = run(original, BUDGET - split)
            resumed = make(seed=5)
            resumed.load_state_dict(state)
            _require(first.candidates and rest.candidates, "nothing to compare")
            _require(run(resumed, BUDGET - split).asks == rest.asks,
                     f"resumed after {split} trials, the strategy asked for other candidates")

    def resume_outstanding() -> None:
        original = make(seed=7)
        run(original, 6)
        batch = original.ask_batch(4)
        _require(batch or original.done, "ask_batch gave nothing and the strategy is not done")
        results = [score(c) for c in batch]
        told = len(batch) // 2
        for candidate, result in zip(batch[:told], results[:told]):
            original.tell(candidate, result)
        try:
            state = checkpoint(original)
        except EpnasError as exc:  # the documented refusal; it must say why
            _require(str(exc), "state_dict refused with an empty message")
            return
        for candidate, result in zip(batch[told:], results[told:]):
            original.tell(candidate, result)
        rest = run(original, BUDGET)
        resumed = make(seed=7)
        resumed.load_state_dict(state)
        for candidate, result in zip(batch[told:], results[told:]):
            resumed.tell(Candidate.from_dict(json.loads(json.dumps(candidate.to_dict()))),
                         result)
        _require(run(resumed, BUDGET).asks == rest.asks,
                 "resumed with outstanding candidates, the strategy asked for other ones")

    def failures() -> None:
        for injected in ({"fail_every": 3, "nan_every": 4}, {"fail_every": 1}):
            strategy = make()
            failing = SyntheticEvaluator(evaluator.input_shape, evaluator.num_classes,
                                         **injected)
            driven = run(strategy, BUDGET, on=failing)
            failed = [r for r in driven.results
                      if not r.ok or math.isnan(r.metrics["accuracy"])]
            _require(failed and all(r.reward == 0.0 for r in failed),
                     "failed results must be scored 0")
            _require(all(r.feasible is False for r in driven.results if not r.ok),
                     "failed results must be infeasible")
            _require(len(driven.candidates) == BUDGET or strategy.done,
                     f"with failures ({injected}) the strategy stopped without being done")
            for candidate in driven.candidates:
                space.validate(candidate.genome)
            checkpoint(strategy)

    def ask_batch() -> None:
        for n in (0, 1, 2, 5):
            strategy = make()
            batch = strategy.ask_batch(n)
            _require(len(batch) <= n and (len(batch) >= 1 or n == 0),
                     f"ask_batch({n}) gave {len(batch)} candidates")
            for candidate in batch:
                strategy.tell(candidate, score(candidate))
            _require(len(strategy.ask_batch(n)) <= n, f"ask_batch({n}) gave more than {n}")

    def options() -> None:
        try:
            make(no_such_option=1)
        except EpnasError as exc:
            _require("no_such_option" in str(exc), f"the error does not name the option: {exc}")
        else:
            raise AssertionError("an unknown option was accepted")

    def start_from() -> None:
        rng = np.random.default_rng(7)
        seeds = [space.sample(rng) for _ in range(2)]
        strategy = make()
        try:
            strategy.start_from(seeds)
        except EpnasError as exc:
            _require("cannot start from given genomes" in str(exc),
                     f"a strategy without seeds must say it 'cannot start from given genomes': "
                     f"{exc}")
            return
        driven = run(strategy, BUDGET)
        keys = {s.key for s in seeds}
        first = driven.candidates[: len(seeds)]
        _require(any(c.key in keys or c.info.get("parent") in keys for c in first),
                 "the seeds did not shape the first candidates")
        again = make()
        again.start_from(seeds)
        _require(run(again, BUDGET).asks == driven.asks, "seeded runs asked for other candidates")

    return {"asks": asks, "seeded": seeded, "tell": tell, "resume": resume,
            "resume-outstanding": resume_outstanding, "failures": failures,
            "ask-batch": ask_batch, "options": options, "start-from": start_from}


STRATEGY_PROPERTIES: tuple[str, ...] = tuple(_strategy_checks(None, None, None, None))  # type: ignore[arg-type]
"""The properties :func:`check_strategy` checks, in order."""


def check_strategy(strategy: str | type[Strategy], space: Space | str, *,
                   evaluator: Evaluator | None = None,
                   options: Mapping[str, Any] | None = None,
                   properties: Iterable[str] | None = None) -> None:
    """Check that a strategy keeps the strategy contract on ``space``: it asks valid,
    JSON-ready candidates, is deterministic per seed, resumes exactly from
    ``state_dict`` (between calls and with candidates outstanding), survives failures,
    and names unknown options.

    Args:
        strategy: a registered name, an entry point, ``module:Class``, or the class.
        space: the space (or its name) to search.
        evaluator: scores the candidates (default: :class:`SyntheticEvaluator`, which
            scores any space from its costs); a params bound at the median of random
            genomes makes about half of them infeasible.
        options: the strategy's options (small schedules keep the check fast).
        properties: the :data:`STRATEGY_PROPERTIES` to check (None: all, in order).

    Raises:
        AssertionError: naming the first property that fails.
    """
    space = get_space(space) if isinstance(space, str) else space
    evaluator = evaluator or SyntheticEvaluator()
    settings = dict(options or {})

    def make(seed: int = 0, **extra: Any) -> Strategy:
        if isinstance(strategy, str):
            return get_strategy(strategy, space, seed=seed, **settings, **extra)
        return strategy(space, seed, **settings, **extra)

    name = strategy if isinstance(strategy, str) else strategy.__name__
    checks = _strategy_checks(make, space, evaluator, _half_feasible(space, evaluator))
    _run(f"strategy {name!r} on space {space.name!r}", checks, properties)


# --- evaluators -------------------------------------------------------------------------


def _evaluator_checks(evaluator: Evaluator, space: Space) -> dict[str, Callable[[], None]]:
    def genomes(n: int) -> list[Genome]:
        rng = np.random.default_rng(0)
        return [space.sample(rng) for _ in range(n)]

    def check(result: Any, fidelity: str | None) -> None:
        _require(isinstance(result, Result), f"evaluate returned a {type(result).__name__}, "
                                             "not a Result")
        _require(result.status in ("done", "failed"),
                 f"status {result.status!r}: evaluate returns 'done' or a Result.failure")
        _require(result.reward is None and result.feasible is None,
                 "reward and feasible are the Study's to fill in")
        _require(all(isinstance(k, str) and isinstance(v, int | float)
                     and not isinstance(v, bool) for k, v in result.metrics.items()),
                 "metrics must map names to numbers")
        if result.status == "done":
            accuracy = result.metrics.get("accuracy")
            _require(accuracy is not None and 0.0 <= accuracy <= 1.0,
                     f"accuracy {accuracy!r} at fidelity {fidelity!r} is not a fraction in "
                     "[0, 1]")
            missing = set(evaluator.metrics) - set(result.metrics)
            _require(not missing, f"metrics {sorted(missing)} are declared but not reported")

    def prepare() -> None:
        evaluator.prepare()

    def evaluate() -> None:
        for genome in genomes(3):
            result = evaluator.evaluate(Candidate(genome, None, {}))
            check(result, None)
            _require(result.status == "done", f"a valid genome failed: {result.error}")

    def costs() -> None:
        for genome in genomes(2):
            _require(evaluator.trial_memory(genome) >= 0, "trial_memory must be >= 0")
            costs = evaluator.costs(genome)
            _require(all(isinstance(v, int | float) and math.isfinite(v)
                         for v in costs.values()), "costs() must be finite numbers")
            result = evaluator.evaluate(Candidate(genome, None, {}))
            missing = set(costs) - set(result.metrics)
            _require(not missing, f"results lack the cost metrics {sorted(missing)} that "
                                  "costs() promises (constraints on them could not apply)")

    def fidelities() -> None:
        genome = genomes(1)[0]
        named = list(dict.fromkeys([*evaluator.fidelities, evaluator.default_fidelity]))
        for fidelity in named:
            if fidelity is None:
                continue
            evaluator.check_fidelity(fidelity)
            check(evaluator.evaluate(Candidate(genome, fidelity, {})), fidelity)
        for fidelity in (None, *named):
            cost = evaluator.query_cost(fidelity)
            _require(isinstance(cost, int | float) and 0 < cost < math.inf,
                     f"query_cost({fidelity!r}) = {cost!r} must be positive and finite")
        if evaluator.fidelities:
            try:
                evaluator.check_fidelity("no-such-fidelity")
            except EpnasError:
                pass
            else:
                raise AssertionError("check_fidelity accepted an undeclared fidelity")

    def entries() -> None:
        found = evaluator.entries()
        if found is not None:
            for genome, accuracy in list(found)[:3]:
                _require(isinstance(genome, Genome) and 0.0 <= accuracy <= 1.0,
                         "entries() must give (genome, accuracy as a fraction) pairs")

    return {"prepare": prepare, "evaluate": evaluate, "costs": costs,
            "fidelities": fidelities, "entries": entries}


EVALUATOR_PROPERTIES: tuple[str, ...] = tuple(_evaluator_checks(None, None))  # type: ignore[arg-type]
"""The properties :func:`check_evaluator` checks, in order."""


def check_evaluator(evaluator: Evaluator, space: Space | str, *,
                    properties: Iterable[str] | None = None) -> None:
    """Check that ``evaluator`` keeps the evaluator contract on genomes of ``space``: it
    prepares, returns ``done`` results with ``accuracy`` as a fraction and every metric
    it declares (``metrics``) or promises (``costs()``), accepts its declared fidelities
    and refuses others, and prices every query (``query_cost``).

    Args:
        evaluator: the evaluator, as a study would create it.
        space: a space (or its name) whose genomes it evaluates.
        properties: the :data:`EVALUATOR_PROPERTIES` to check (None: all, in order).

    Raises:
        AssertionError: naming the first property that fails.
    """
    space = get_space(space) if isinstance(space, str) else space
    _run(f"evaluator {type(evaluator).__name__} on space {space.name!r}",
         _evaluator_checks(evaluator, space), properties)

