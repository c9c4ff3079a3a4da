"""``epnas benchmark nb201``: search strategies side by side on a NAS-Bench-201 table.

Every (strategy, seed) run drives its strategy the way an inline Study does (ask one
candidate, look it up, score it with the objective, tell it) until its query budget is
spent; whole runs go to worker processes, since one lookup costs microseconds. A query
is one evaluation a strategy asks for, repeats included; a query at fidelity ``12ep``
costs 12/200 of a ``200ep`` one, so multi-fidelity strategies (EcoNAS) get the same
training budget as the others. The best found after ``N`` queries is the best
objective-column accuracy among the full-fidelity (``200ep``) queries made within that
budget: a proxy accuracy is never reported as found.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from epnas import spaces, strategies
from epnas.config import default_preset
from epnas.errors import EpnasError
from epnas.evaluators.tabular import TabularEvaluator, default_path
from epnas.executors import available_cores
from epnas.objective import Objective

DEFAULT_STRATEGIES = ("epnas", "random", "evolution", "reinforce", "econas", "pnas")
DEFAULT_QUERIES = (10, 30, 100, 300)
FULL_FIDELITY = "200ep"


def query_cost(fidelity: str) -> float:
    """The budget a tabular query uses: its training epochs over the full 200."""
    return int(fidelity.removesuffix("ep")) / 200


@dataclass(frozen=True)
class RunSpec:
    """One search run of a benchmark (picklable: it travels to a worker process)."""

    strategy: str
    seed: int
    options: dict[str, Any]
    budget: int
    csv: str
    objective: str


def run_one(spec: RunSpec) -> np.ndarray:
    """Best accuracy found (percent) within budgets 1..``spec.budget``; NaN before any."""
    evaluator = TabularEvaluator(spec.csv, objective_column=spec.objective)
    strategy = strategies.get(spec.strategy, "nb201", seed=spec.seed, **spec.options)
    objective = Objective()
    spent, found = 0.0, []  # (budget spent after the query, accuracy when full fidelity)
    while spent < spec.budget - 1e-9 and not strategy.done:
        asked = strategy.ask_batch(1)
        if not asked and strategy.done:
            break
        if not asked:
            raise EpnasError(f"strategy {spec.strategy!r} asked for nothing although every "
                             "result was told and it is not done")
        candidate = asked[0]
        fidelity = candidate.fidelity or evaluator.default_fidelity
        result = objective.score(evaluator.evaluate(candidate))
        strategy.tell(candidate, result)
        spent += query_cost(fidelity)
        full = fidelity == FULL_FIDELITY and result.ok
        found.append((spent, 100 * result.accuracy if full else math.nan))
    curve = np.full(spec.budget, math.nan)
    best = math.nan
    at = 0
    for n in range(1, spec.budget + 1):
        while at < len(found) and found[at][0] <= n + 1e-9:
            best = np.fmax(best, found[at][1])
            at += 1
        curve[n - 1] = best
    return curve


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # several runs share the cores; tiny models gain nothing


@dataclass
class Benchmark:
    """Curves of best-found accuracy: ``curves[strategy]`` is [seeds, max budget]."""

    csv: str
    objective: str
    budgets: tuple[int, ...]
    optimum: float
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # mean seconds per run

    def rows(self) -> list[dict[str, Any]]:
        """The ``--json`` rows: strategy, queries, mean, std (sample), seeds (with a result)."""
        rows = []
        for name, curves in self.curves.items():
            for n in self.budgets:
                values = curves[:, n - 1]
                values = values[~np.isnan(values)]
                rows.append({"strategy": name, "queries": n,
                             "mean": float(values.mean()) if len(values) else None,
                             "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                             "seeds": len(values)})
        return rows


def run_benchmark(names: Sequence[str], budgets: Sequence[int], seeds: int, csv: str,
                  objective: str = "test_acc_200ep", preset: str | None = None,
                  workers: int | None = None,
                  progress: Callable[[str], None] | None = None) -> Benchmark:
    """Run every strategy with seeds ``0..seeds-1`` up to the largest budget.

    Args:
        names: registered strategies (each must support ``nb201``).
        budgets: query budgets to report.
        seeds: runs per strategy.
        csv: the table (see ``docs/benchmark.md`` for its schema).
        objective: the table column reported (and searched at ``200ep``).
        preset: the preset of strategies that have it; others use their ``tabular``
            preset, or their defaults.
        workers: processes (default: every available core).
        progress: called with the strategy name after each finished run.

    Raises:
        EpnasError: an unknown strategy or preset, or a bad table.
    """
    evaluator = TabularEvaluator(csv, objective_column=objective)  # fail fast on bad data
    specs = [RunSpec(name, seed, _options(name, preset), max(budgets), csv, objective)
             for seed in range(seeds) for name in names]
    bench = Benchmark(csv, objective, tuple(budgets), 100 * evaluator.best()[1])
    results: dict[str, list[np.ndarray]] = {name: [] for name in names}
    elapsed: dict[str, float] = dict.fromkeys(names, 0.0)
    workers = min(workers or available_cores(), len(specs))
    with ExitStack() as stack:
        if workers == 1:
            outcomes: Iterator[tuple[np.ndarray, float]] = map(_timed, specs)
        else:  # spawn: torch state in a forked parent is not fork-safe
            pool = stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=get_context("spawn"), initializer=_worker_init))
            outcomes = pool.map(_timed, specs)
        for spec, (curve, seconds) in zip(specs, outcomes):
            results[spec.strategy].append(curve)
            elapsed[spec.strategy] += seconds
            if progress is not None:
                progress(spec.strategy)
    for name in names:
        bench.curves[name] = np.stack(results[name])
        bench.seconds[name] = elapsed[name] / seeds
    return bench


def _timed(spec: RunSpec) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    curve = run_one(spec)
    return curve, time.perf_counter() - start


def _options(name: str, preset: str | None) -> dict[str, Any]:
    _, cls = strategies.STRATEGIES.resolve(name)
    if not cls.supports(spaces.get("nb201")):
        raise EpnasError(f"strategy {name!r} does not support the nb201 space")
    chosen = preset if preset in cls.presets else default_preset(name, "tabular")
    return dict(cls.presets[chosen]) if chosen else {}


def plot(bench: Benchmark, path: str | Path) -> None:
    """Regret (table optimum minus best found) against queries, mean with ±1 std shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = 1e-3  # a run that found the optimum has regret 0: keep it on the log axis
    x = np.arange(1, max(bench.budgets) + 1)
    for name, curves in bench.curves.items():
        regret = bench.optimum - curves
        with np.errstate(all="ignore"):  # columns before any full query are all NaN
            mean = np.nanmean(regret, axis=0)
            std = np.nanstd(regret, axis=0)
        line, = ax.plot(x, np.maximum(mean, floor), label=name)
        ax.fill_between(x, np.maximum(mean - std, floor), np.maximum(mean + std, floor),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("queries (a 12-epoch query counts 12/200)")
    ax.set_ylabel(f"regret of best {bench.objective} (% points)")
    seeds = len(next(iter(bench.curves.values())))
    ax.set_title(f"{Path(bench.csv).name}: optimum {bench.optimum:.2f} %, "
                 f"mean ± std over {seeds} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise EpnasError(f"cannot write plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def table(bench: Benchmark) -> Table:
    """Mean ± std best-found accuracy per strategy and budget, as a rich table."""
    seeds = len(next(iter(bench.curves.values())))
    out = Table(title=f"{Path(bench.csv).name}: best {bench.objective} found (%), "
                      f"mean ± std over {seeds} seeds (optimum {bench.optimum:.2f})")
    out.add_column("strategy", style="bold")
    for n in bench.budgets:
        out.add_column(f"{n} queries", justify="right")
    out.add_column("s/run", justify="right")
    by_name: dict[str, list[str]] = {}
    for row in bench.rows():
        cell = "n/a" if row["mean"] is None else f"{row['mean']:.2f} ± {row['std']:.2f}"
        if row["mean"] is not None and row["seeds"] < seeds:
            cell += f" ({row['seeds']} seeds)"
        by_name.setdefault(row["strategy"], []).append(cell)
    for name, cells in by_name.items():
        out.add_row(name, *cells, f"{bench.seconds[name]:.1f}")
    return out


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise EpnasError(f"{flag} {text!r}: expected positive integers separated by commas")
    return sorted(set(values))


DEFAULT_PLOT = "nb201-regret.png"


def cmd_benchmark(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(s.strip() for s in args.strategies.split(",") if s.strip()))
    if not names:
        raise EpnasError("--strategies: name at least one strategy")
    budgets = _int_list(args.queries, "--queries")
    if args.seeds < 1:
        raise EpnasError(f"--seeds {args.seeds}: must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise EpnasError(f"--workers {args.workers}: must be at least 1")
    csv = args.csv or str(default_path())
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout
    # a file or pipe gets the whole table on one line per strategy (rich assumes 80 columns)
    console = Console(file=out, highlight=False, width=None if out.isatty() else 120)
    total = len(names) * args.seeds
    console.print(f"epnas: benchmark nb201, {len(names)} strategies x {args.seeds} seeds up "
                  f"to {max(budgets)} queries on {csv}")
    start = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("runs", total=total)
        bench = run_benchmark(names, budgets, args.seeds, csv, args.objective, args.preset,
                              args.workers, progress=lambda _: bar.advance(task))
    if args.json:
        text = json.dumps({"results": bench.rows()}, indent=2) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    if args.plot:
        plot(bench, args.plot)
    if not to_stdout:
        console.print(table(bench))
    console.print(f"{total} runs in {time.perf_counter() - start:.0f} s "
                  f"({args.workers or available_cores()} processes)"
                  + (f"; plot: {args.plot}" if args.plot else ""))
    return 0


def add_benchmark_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``benchmark`` command and its ``nb201`` subcommand."""
    p = sub.add_parser("benchmark", help="compare search strategies on a tabular benchmark")
    kinds = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = kinds.add_parser(
        "nb201", help="strategies side by side on a NAS-Bench-201 table",
        description="Run strategies side by side on a NAS-Bench-201 CSV and print the mean "
                    "± std best accuracy found per query budget.")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma-separated (default {','.join(DEFAULT_STRATEGIES)})")
    p.add_argument("--queries", default=",".join(map(str, DEFAULT_QUERIES)),
                   help="query budgets to report (default 10,30,100,300)")
    p.add_argument("--seeds", type=int, default=20, help="runs per strategy (default 20)")
    p.add_argument("--csv", metavar="PATH",
                   help="NAS-Bench-201-style table (default: the shared CIFAR-10 one)")
    p.add_argument("--objective", default="test_acc_200ep",
                   help="column searched and reported (default test_acc_200ep)")
    p.add_argument("--preset", help="preset of the strategies that have it "
                                    "(default: tabular where defined)")
    p.add_argument("--workers", type=int, help="processes (default: every core)")
    p.add_argument("--plot", metavar="OUT.png", default=DEFAULT_PLOT,
                   help=f"where the regret plot goes (default {DEFAULT_PLOT})")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None,
                   help="write no plot")
    json_flag(p)
    p.set_defaults(func=cmd_benchmark)
