"""``epnas benchmark``: search strategies side by side on a table (NAS-Bench-201 or any).

Every (strategy, seed) run drives its strategy the way an inline Study does (the
strategy is attached to the budget, the objective and the evaluator's costs; then ask
one candidate, evaluate it, score it with the objective, tell it) until its query
budget is spent; whole runs go to worker processes, since one lookup costs
microseconds. A query is one evaluation a strategy asks for, repeats included; it
costs :meth:`Evaluator.query_cost` of its fidelity (1 unless the evaluator says
otherwise; on the NAS-Bench-201 table a ``12ep`` query costs 12/200), so
multi-fidelity strategies (EcoNAS) get the same training budget as the others.

The best found after ``N`` queries is the best accuracy among the feasible queries at
the evaluator's default (full) fidelity made within that budget: a proxy accuracy is
never reported as found. Without constraints every result is feasible; with them a
seed that found no feasible network counts as the table's worst accuracy.

Strategies are given as specs (:mod:`epnas.strategies.spec`):
``epnas,epnas[lr=0],random+filter``; each row is named by its spec as written.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from epnas import spaces, strategies
from epnas.config import default_preset
from epnas.errors import EpnasError
from epnas.evaluators.base import Evaluator
from epnas.evaluators.tabular import default_path
from epnas.executors import EvaluatorSpec, available_cores, evaluate_safely, exit_with_parent
from epnas.flags import constraint_flags, constraint_objective, parse_options
from epnas.objective import Constraint, Objective
from epnas.spaces.base import Space
from epnas.strategies import spec as strategy_spec
from epnas.strategies.base import SearchContext
from epnas.strategies.filters import Limit, constraint_limits, early_exit

DEFAULT_STRATEGIES = ("epnas", "random", "evolution", "reinforce", "econas", "pnas")
DEFAULT_QUERIES = (10, 30, 100, 300)
REACHED = 1e-6  # percent points: a best this close to the optimum reached it


@dataclass(frozen=True)
class Setup:
    """What is searched: a space and an evaluator, each a registered name or
    ``package.module:Class`` with its options (picklable: it travels to workers)."""

    space: str = "nb201"
    space_options: Mapping[str, Any] = field(default_factory=dict)
    evaluator: str = "tabular"
    evaluator_options: Mapping[str, Any] = field(default_factory=dict)

    def create(self) -> tuple[Space, Evaluator]:
        """A fresh space and evaluator, created the way a Study creates them."""
        return (spaces.get(self.space, **self.space_options),
                EvaluatorSpec(self.evaluator, dict(self.evaluator_options)).create())


@dataclass(frozen=True)
class RunSpec:
    """One search run of a benchmark (picklable: it travels to a worker process)."""

    label: str  # the strategy spec as written: the row's name
    strategy: str
    options: dict[str, Any]
    limits: tuple[Limit, ...]  # the early-exit filter of a ``+filter`` spec
    seed: int
    budget: int
    setup: Setup
    objective: Objective


@dataclass
class Run:
    """What one run found: per budget 1..N, the best feasible accuracy (percent, NaN
    before any) and whether a full-fidelity result had come back; the lowest such
    accuracy seen (percent, NaN when none)."""

    best: np.ndarray
    reached: np.ndarray
    lowest: float
    seconds: float = 0.0


def run_one(spec: RunSpec, space: Space, evaluator: Evaluator) -> Run:
    """Drive one strategy for ``spec.budget`` queries on ``evaluator``."""
    strategy = early_exit(strategies.get(spec.strategy, space, seed=spec.seed, **spec.options),
                          evaluator.costs, spec.limits)
    strategy.attach(SearchContext(trials=spec.budget, workers=1, objective=spec.objective,
                                  costs=evaluator.costs, evaluator=evaluator))
    full = evaluator.default_fidelity
    spent, found = 0.0, []  # (budget spent after the query, accuracy %, feasible) at full
    while spent < spec.budget - 1e-9 and not strategy.done:
        asked = strategy.ask_batch(1)
        if not asked and strategy.done:
            break
        if not asked:
            raise EpnasError(f"strategy {spec.label!r} asked for nothing although every "
                             "result was told and it is not done")
        candidate = asked[0]
        fidelity = candidate.fidelity or full
        result = spec.objective.score(evaluate_safely(evaluator, candidate))
        strategy.tell(candidate, result)
        cost = evaluator.query_cost(fidelity)
        if not cost > 0:
            raise EpnasError(f"{type(evaluator).__name__}.query_cost({fidelity!r}) is {cost}; "
                             "a query must cost more than 0")
        spent += cost
        accuracy = float(result.metrics.get("accuracy", math.nan)) if result.ok else math.nan
        if fidelity == full and math.isfinite(accuracy):
            found.append((spent, 100 * accuracy, bool(result.feasible)))
    best = np.full(spec.budget, math.nan)
    reached = np.zeros(spec.budget, dtype=bool)
    top, any_found, at = math.nan, False, 0
    for n in range(1, spec.budget + 1):
        while at < len(found) and found[at][0] <= n + 1e-9:
            any_found = True
            if found[at][2]:
                top = float(np.fmax(top, found[at][1]))
            at += 1
        best[n - 1], reached[n - 1] = top, any_found
    return Run(best, reached, min((f[1] for f in found), default=math.nan))


_WORKER: dict[str, tuple[Space, Evaluator]] = {}  # a worker's space and evaluator


def _run_in_worker(spec: RunSpec) -> Run:
    key = repr(spec.setup)
    if key not in _WORKER:  # once per process: the evaluator caches costs
        _WORKER[key] = spec.setup.create()
    return _timed(spec, *_WORKER[key])


def _timed(spec: RunSpec, space: Space, evaluator: Evaluator) -> Run:
    start = time.perf_counter()
    run = run_one(spec, space, evaluator)
    run.seconds = time.perf_counter() - start
    return run


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # several runs share the cores; tiny models gain nothing
    exit_with_parent()


@dataclass
class Benchmark:
    """Best-found accuracies: ``curves[row]`` is [seeds, max budget] (percent; NaN where
    a seed had no full-fidelity result yet), ``feasible[row]`` whether that best is
    feasible. ``optimum`` is the table's best (feasible, under constraints) or None when
    the evaluator cannot enumerate its table; ``minimum`` is the table's worst (the
    worst seen, when it cannot)."""

    title: str
    budgets: tuple[int, ...]
    objective: Objective
    reference: str
    optimum: float | None
    minimum: float
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    feasible: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # mean seconds per run

    def rows(self) -> list[dict[str, Any]]:
        """The ``--json`` rows, one per strategy and budget (accuracies in percent).

        ``mean``, ``std`` (sample) and ``se`` over the ``seeds`` that had a result;
        ``t``: Welch's t of this row against the reference row (positive: better; None
        for the reference itself or too few seeds); ``feasible``: the share of all seeds
        whose best is feasible; ``optimum_share``: the share of all seeds whose best is
        the (feasible) optimum, None when the optimum is unknown.
        """
        rows = []
        for name, curves in self.curves.items():
            for n in self.budgets:
                values = _values(curves, n)
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                feasible = self.feasible[name][:, n - 1]
                reached = None
                if self.optimum is not None:
                    hits = feasible & (curves[:, n - 1] >= self.optimum - REACHED)
                    reached = float(hits.mean())
                rows.append({
                    "strategy": name, "queries": n,
                    "mean": float(values.mean()) if len(values) else None,
                    "std": std, "se": std / math.sqrt(len(values)) if len(values) else 0.0,
                    "t": None if name == self.reference else _welch(
                        values, _values(self.curves[self.reference], n)),
                    "seeds": len(values), "feasible": float(feasible.mean()),
                    "optimum_share": reached})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"results": self.rows(), "reference": self.reference,
                "optimum": self.optimum,
                "minimum": None if math.isnan(self.minimum) else self.minimum,
                "constraints": [str(c) for c in self.objective.constraints]}


def _values(curves: np.ndarray, n: int) -> np.ndarray:
    values = curves[:, n - 1]
    return values[~np.isnan(values)]


def _welch(values: np.ndarray, reference: np.ndarray) -> float | None:
    """Welch's t of ``values`` against ``reference``; None when it is not a number."""
    if len(values) < 2 or len(reference) < 2:
        return None
    from scipy.stats import ttest_ind

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # both samples constant: scipy warns, t is NaN
        t = float(ttest_ind(values, reference, equal_var=False).statistic)
    return t if math.isfinite(t) else None


def run_benchmark(specs: Sequence[str], budgets: Sequence[int], seeds: int, *,
                  space: str = "nb201", space_options: Mapping[str, Any] | None = None,
                  evaluator: str = "tabular",
                  evaluator_options: Mapping[str, Any] | None = None,
                  objective: Objective | Iterable[Constraint | str] = (),
                  reference: str | None = None, preset: str | None = None,
                  workers: int | None = None, title: str | None = None,
                  progress: Callable[[str], None] | None = None) -> Benchmark:
    """Run every strategy spec with seeds ``0..seeds-1`` up to the largest budget.

    Args:
        specs: strategy specs (``epnas``, ``epnas[lr=0]``, ``random+filter``,
            ``pkg.mod:Class[k=v]``); each must support the space.
        budgets: query budgets to report.
        seeds: runs per strategy.
        space: registered space or ``package.module:Class``, with ``space_options``.
        evaluator: registered evaluator or ``package.module:Class``, with
            ``evaluator_options`` (default: the NAS-Bench-201 table, ``tabular``).
        objective: the constraints every run is scored with (an Objective or
            ``METRIC:LOW:HIGH[:PENALTY]`` strings); ``+filter`` specs filter by them.
        reference: the spec whose row the others' Welch t is against (default the first).
        preset: the preset of strategies that have it; others use their ``tabular``
            preset, or their defaults; options in a spec override the preset's.
        workers: processes (default: every available core).
        title: what the table and plot are titled with (default ``space / evaluator``).
        progress: called with the spec after each finished run.

    Raises:
        EpnasError: a bad spec, strategy, option, preset or reference; a bad space,
            evaluator or table; a constraint the evaluator cannot judge.
    """
    labels = list(dict.fromkeys(s.strip() for s in specs if s.strip()))
    if not labels:
        raise EpnasError("--strategies: name at least one strategy")
    reference = labels[0] if reference is None else reference.strip()
    if reference not in labels:
        raise EpnasError(f"--reference {reference!r} is not one of the strategies "
                         f"({', '.join(labels)})")
    objective = objective if isinstance(objective, Objective) else Objective.of(objective)
    setup = Setup(space, dict(space_options or {}), evaluator, dict(evaluator_options or {}))
    the_space, the_evaluator = setup.create()  # fail fast on a bad table or option
    plans = {label: _plan(label, the_space, preset, objective) for label in labels}
    budget = max(budgets)
    optimum, minimum = table_extremes(the_evaluator, objective)
    runs = [RunSpec(label, *plans[label], seed, budget, setup, objective)
            for seed in range(seeds) for label in labels]
    results: dict[str, list[Run]] = {label: [] for label in labels}
    workers = min(workers or available_cores(), len(runs))
    with ExitStack() as stack:
        if workers == 1:
            outcomes: Iterator[Run] = (_timed(r, the_space, the_evaluator) for r in runs)
        else:  # spawn: torch state in a forked parent is not fork-safe
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=get_context("spawn"), initializer=_worker_init))
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)  # on an error
            outcomes = pool.map(_run_in_worker, runs)
        for run_spec, run in zip(runs, outcomes):
            results[run_spec.label].append(run)
            if progress is not None:
                progress(run_spec.label)
    if minimum is None:  # the worst accuracy any run saw stands for the table's
        lows = [r.lowest for rs in results.values() for r in rs if not math.isnan(r.lowest)]
        minimum = min(lows, default=math.nan)
    bench = Benchmark(title or f"{space} / {evaluator}", tuple(budgets), objective,
                      reference, optimum, minimum)
    for label, label_runs in results.items():
        best = np.stack([r.best for r in label_runs])
        reached = np.stack([r.reached for r in label_runs])
        bench.feasible[label] = ~np.isnan(best)
        # a seed with results but none feasible counts as the table's worst accuracy
        bench.curves[label] = np.where(reached & np.isnan(best), minimum, best)
        bench.seconds[label] = sum(r.seconds for r in label_runs) / seeds
    return bench


def _plan(label: str, space: Space, preset: str | None,
          objective: Objective) -> tuple[str, dict[str, Any], tuple[Limit, ...]]:
    """The strategy name, options (preset, then the spec's) and filter limits of a spec."""
    spec = strategy_spec.parse(label)
    _, cls = strategies.STRATEGIES.resolve(spec.name)
    if not cls.supports(space):
        raise EpnasError(f"strategy {label!r} does not support the {space.name} space")
    chosen = preset if preset in cls.presets else default_preset(spec.name, "tabular")
    options = {**(cls.presets[chosen] if chosen else {}), **spec.options}
    strategies.get(spec.name, space, seed=0, **options)  # bad options fail here, once
    limits = tuple(constraint_limits(objective)) if spec.filter else ()
    return spec.name, options, limits


def table_extremes(evaluator: Evaluator,
                   objective: Objective | None = None) -> tuple[float | None, float | None]:
    """(optimum, minimum) accuracy in percent of an evaluator that can enumerate its table
    (:meth:`Evaluator.entries`); the optimum among the entries whose costs satisfy every
    constraint (None when none does); (None, None) when it cannot enumerate."""
    objective = objective or Objective()
    entries = evaluator.entries()
    if entries is None:
        return None, None
    entries = list(entries)
    if not entries:
        return None, None
    feasible = [acc for genome, acc in entries if not objective.constraints
                or objective.feasible({**evaluator.costs(genome), objective.metric: acc})]
    return (100 * max(feasible) if feasible else None,
            100 * min(acc for _, acc in entries))


def plot(bench: Benchmark, path: str | Path) -> None:
    """Regret (optimum minus best found) against queries, mean with ±1 std shaded; without
    a known optimum the regret is to the best any run found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = bench.optimum
    if top is None:
        top = max((float(np.nanmax(c)) for c in bench.curves.values()
                   if not np.isnan(c).all()), default=0.0)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = 1e-3  # a run that found the optimum has regret 0: keep it on the log axis
    x = np.arange(1, max(bench.budgets) + 1)
    for name, curves in bench.curves.items():
        regret = top - curves
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # columns before any full query are all NaN
            mean = np.nanmean(regret, axis=0)
            std = np.nanstd(regret, axis=0)
        line, = ax.plot(x, np.maximum(mean, floor), label=name)
        ax.fill_between(x, np.maximum(mean - std, floor), np.maximum(mean + std, floor),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("queries (a query at a cheaper fidelity counts its share)")
    what = "feasible optimum" if bench.objective.constraints else "optimum"
    if bench.optimum is None:
        what = "best found by any run"
    ax.set_ylabel(f"regret to the {what} (% points)")
    seeds = len(next(iter(bench.curves.values())))
    ax.set_title(f"{bench.title}: {what} {top:.2f} %, mean ± std over {seeds} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise EpnasError(f"cannot write plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def caption(bench: Benchmark) -> str:
    """The line above the tables: what is measured, the optimum and the reference."""
    seeds = len(next(iter(bench.curves.values())))
    constrained = bool(bench.objective.constraints)
    optimum = "n/a" if bench.optimum is None else f"{bench.optimum:.2f}"
    under = ""
    if constrained:
        under = f" under {', '.join(map(str, bench.objective.constraints))}"
    feasible = "feasible " if constrained else ""
    lines = [f"{bench.title}: best {feasible}accuracy found (%){under}, mean ± std over "
             f"{seeds} seeds",
             f"{feasible}optimum {optimum} (column optimum: share of seeds that found it), "
             f"worst {bench.minimum:.2f}",
             f"t: Welch's t against {bench.reference} (positive: better)"
             + ("; feasible: share of seeds whose best is feasible" if constrained else "")]
    return escape("\n".join(lines))


def tables(bench: Benchmark) -> list[Table]:
    """One rich table per budget: a row per strategy."""
    seeds = len(next(iter(bench.curves.values())))
    constrained = bool(bench.objective.constraints)
    by_budget: dict[int, list[dict[str, Any]]] = {}
    for row in bench.rows():
        by_budget.setdefault(row["queries"], []).append(row)
    out = []
    for n in bench.budgets:
        table = Table(title=f"{n} queries", title_justify="left")
        table.add_column("strategy", style="bold")
        for column in ("mean ± std", "se", "t", *(("feasible",) if constrained else ()),
                       "optimum", "s/run"):
            table.add_column(column, justify="right")
        for row in by_budget[n]:
            if row["mean"] is None:
                cells = ["n/a", "", ""]
            else:
                cells = [f"{row['mean']:.2f} ± {row['std']:.2f}"
                         + (f" ({row['seeds']} seeds)" if row["seeds"] < seeds else ""),
                         f"{row['se']:.2f}", "" if row["t"] is None else f"{row['t']:+.2f}"]
            if constrained:
                cells.append(f"{row['feasible']:.2f}")
            share = row["optimum_share"]
            cells += ["n/a" if share is None else f"{share:.2f}",
                      f"{bench.seconds[row['strategy']]:.1f}"]
            table.add_row(escape(row["strategy"]), *cells)
        out.append(table)
    return out


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise EpnasError(f"{flag} {text!r}: expected positive integers separated by commas")
    return sorted(set(values))


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.benchmark == "nb201":
        csv = args.csv or str(default_path())
        setup = Setup("nb201", {}, "tabular", {"data": csv, "objective_column": args.objective})
        title = f"{Path(csv).name} {args.objective}"
    else:
        setup = Setup(args.space, parse_options(args.space_opt, "--space-opt"),
                      args.evaluator, parse_options(args.evaluator_opt, "--evaluator-opt"))
        title = f"{args.space} / {args.evaluator}"
    if args.strategies is not None:
        specs = strategy_spec.split(args.strategies)
    else:  # the default strategies that can search this space
        space = spaces.get(setup.space, **setup.space_options)
        specs = [s for s in DEFAULT_STRATEGIES if s in strategies.names()
                 and strategies.STRATEGIES.resolve(s)[1].supports(space)]
    budgets = _int_list(args.queries, "--queries")
    if args.seeds < 1:
        raise EpnasError(f"--seeds {args.seeds}: must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise EpnasError(f"--workers {args.workers}: must be at least 1")
    objective = constraint_objective(args)
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout
    # a file or pipe gets the whole table on one line per strategy (rich assumes 80 columns)
    console = Console(file=out, highlight=False, width=None if out.isatty() else 120)
    total = len(dict.fromkeys(specs)) * args.seeds
    console.print(escape(f"epnas: benchmark {title}, {len(dict.fromkeys(specs))} strategies "
                         f"x {args.seeds} seeds up to {max(budgets)} queries"))
    start = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("runs", total=total)
        bench = run_benchmark(specs, budgets, args.seeds, space=setup.space,
                              space_options=setup.space_options, evaluator=setup.evaluator,
                              evaluator_options=setup.evaluator_options, objective=objective,
                              reference=args.reference, preset=args.preset,
                              workers=args.workers, title=title,
                              progress=lambda _: bar.advance(task))
    if args.json:
        text = json.dumps(bench.to_json(), indent=2) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    plot_path = args.plot
    if plot_path == "":  # the default: named after the space
        plot_path = re.sub(r"[^A-Za-z0-9_.-]+", "_", setup.space) + "-regret.png"
    if plot_path:
        plot(bench, plot_path)
    if not to_stdout:
        console.print(caption(bench))
        for table in tables(bench):
            console.print(table)
    console.print(escape(f"{total} runs in {time.perf_counter() - start:.0f} s "
                         f"({args.workers or available_cores()} processes)"
                         + (f"; plot: {plot_path}" if plot_path else "")))
    return 0


def add_benchmark_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``benchmark`` command and its ``nb201`` and ``custom`` subcommands."""
    p = sub.add_parser("benchmark", help="compare search strategies on a tabular benchmark")
    kinds = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    nb201 = kinds.add_parser(
        "nb201", help="strategies side by side on a NAS-Bench-201 table",
        description="Run strategies side by side on a NAS-Bench-201 CSV and print the mean "
                    "± std best accuracy found per query budget.")
    nb201.add_argument("--csv", metavar="PATH",
                       help="NAS-Bench-201-style table (default: $EPNAS_NB201_CSV, else the "
                            "CIFAR-10 table shipped with epnas)")
    nb201.add_argument("--objective", default="test_acc_200ep",
                       help="column searched and reported (default test_acc_200ep)")
    custom = kinds.add_parser(
        "custom", help="strategies side by side on any space and tabular evaluator",
        description="Run strategies side by side on a space and an evaluator (registered "
                    "names or package.module:Class) and print the mean ± std best "
                    "accuracy found per query budget.")
    custom.add_argument("--space", required=True,
                        help="registered name or package.module:ClassName")
    custom.add_argument("--space-opt", action="append", metavar="KEY=VALUE",
                        help="space option (repeatable)")
    custom.add_argument("--evaluator", required=True,
                        help="registered name or package.module:ClassName (a table: "
                             "every query is a lookup)")
    custom.add_argument("--evaluator-opt", action="append", metavar="KEY=VALUE",
                        help="evaluator option (repeatable)")
    for p in (nb201, custom):
        p.add_argument("--strategies", metavar="SPECS",
                       help="comma-separated specs NAME[KEY=VALUE,...][+filter] (default "
                            f"{','.join(DEFAULT_STRATEGIES)}, those that support the space)")
        p.add_argument("--reference", metavar="SPEC",
                       help="the row Welch's t is computed against (default the first)")
        p.add_argument("--queries", default=",".join(map(str, DEFAULT_QUERIES)),
                       help="query budgets to report (default 10,30,100,300)")
        p.add_argument("--seeds", type=int, default=20, help="runs per strategy (default 20)")
        constraint_flags(p)
        p.add_argument("--preset", help="preset of the strategies that have it "
                                        "(default: tabular where defined)")
        p.add_argument("--workers", type=int, help="processes (default: every core)")
        p.add_argument("--plot", metavar="OUT.png", default="",
                       help="where the regret plot goes (default SPACE-regret.png)")
        p.add_argument("--no-plot", dest="plot", action="store_const", const=None,
                       help="write no plot")
        json_flag(p)
        p.set_defaults(func=cmd_benchmark)
