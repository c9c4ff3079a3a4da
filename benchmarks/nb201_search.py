"""EPNAS against random search on the NAS-Bench-201 CIFAR-10 table, side by side.

Every strategy runs the same seeds through an in-memory Study with the tabular
evaluator; a query is one evaluation a strategy asks for (repeats included, answered
as ``cached``). Prints the mean ± std of the best ``test_acc_200ep`` found after each
query budget (feasible models only, when ``--params-share`` adds a constraint), and the
feasible share per episode of EPNAS.

    python benchmarks/nb201_search.py --seeds 20 --queries 100,300
    python benchmarks/nb201_search.py --seeds 10 --queries 300 --params-share 0.33
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

import epnas
from epnas.evaluators.tabular import TabularEvaluator
from epnas.study import Study


def options_for(strategy: str, preset: str) -> dict:
    _, cls = epnas.strategies.STRATEGIES.resolve(strategy)
    return dict(cls.presets.get(preset, {}))


def best_curve(study: Study, budget: int) -> np.ndarray:
    """Best feasible accuracy found after each query (percent), padded to ``budget``."""
    acc = [t.metrics.get("accuracy", 0.0) if t.status in ("done", "cached") and t.feasible
           else 0.0 for t in study.trials()]
    curve = np.maximum.accumulate(np.asarray(acc[:budget] or [0.0]))
    return 100 * np.pad(curve, (0, budget - len(curve)), mode="edge")


def params_cap(share: float) -> float:
    """The params value under which ``share`` of the NB201 cells lie."""
    space = epnas.spaces.get("nb201")
    params = [epnas.cost(space.from_arch(arch), (3, 32, 32), 10).params
              for arch, _ in TabularEvaluator().items("200ep")]
    return float(np.quantile(params, share))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--queries", default="100,300")
    parser.add_argument("--strategies", default="epnas,random")
    parser.add_argument("--preset", default="tabular")
    parser.add_argument("--params-share", type=float,
                        help="add a params cap that this share of the space satisfies")
    args = parser.parse_args()
    budgets = [int(q) for q in args.queries.split(",")]
    constraints = []
    if args.params_share:
        cap = params_cap(args.params_share)
        constraints = [f"params::{cap:.0f}"]
        Console().print(f"constraint params <= {cap:,.0f} ({args.params_share:.0%} of cells)")
    table = Table(title=f"NB201 CIFAR-10, best feasible test_acc_200ep (%), {args.seeds} seeds")
    table.add_column("strategy")
    for b in budgets:
        table.add_column(f"@{b} queries", justify="right")
    table.add_column("best feasible", justify="right")
    table.add_column("s/run", justify="right")
    for name in args.strategies.split(","):
        curves, feasible_best, shares = [], [], []
        start = time.perf_counter()
        for seed in range(args.seeds):
            study = Study(space="nb201", strategy=name, evaluator="tabular", seed=seed,
                          strategy_options=options_for(name, args.preset),
                          constraints=constraints, trials=max(budgets), out=None)
            study.run()
            curves.append(best_curve(study, max(budgets)))
            best = study.best()
            feasible_best.append(bool(best and best.feasible))
            stats = study.strategy.stats()
            if stats:
                shares.append([s["feasible_share"] for s in stats])
        seconds = (time.perf_counter() - start) / args.seeds
        curves_arr = np.stack(curves)
        cells = [f"{curves_arr[:, b - 1].mean():.2f} ± {curves_arr[:, b - 1].std():.2f}"
                 for b in budgets]
        table.add_row(name, *cells, f"{np.mean(feasible_best):.0%}", f"{seconds:.1f}")
        if constraints and shares:
            n = min(len(s) for s in shares)
            per_episode = np.mean([s[:n] for s in shares], axis=0)
            k = max(1, n // 5)
            first, last = per_episode[:k].mean(), per_episode[-k:].mean()
            Console().print(f"{name}: feasible share per episode, first {k} {first:.2f} -> "
                            f"last {k} {last:.2f} (first {per_episode[0]:.2f}, last "
                            f"{per_episode[-1]:.2f}, {n} episodes)")
    Console().print(table)


if __name__ == "__main__":
    main()
