"""The EPNAS controller's own cost per step, next to nothing else.

Per space: the time to sample one step for B=8 branches (policy forward with masks,
plus applying the actions), and the time of one REINFORCE update over a whole paper
episode (B x T decision sequences). Target: sampling 8 branches + one update < 50 ms.

    python benchmarks/epnas_controller.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

import epnas
from epnas.strategies.epnas import EPNAS


def measure(space_name: str, repeats: int) -> tuple[float, float, int]:
    strategy = epnas.strategies.get("epnas", space_name, seed=0)
    space = strategy.space
    parents = [space.sample(np.random.default_rng(i)) for i in range(strategy.options.branches)]
    strategy._propose(parents)  # warm-up (lazy torch initialisation)
    start = time.perf_counter()
    records = []
    for _ in range(repeats):
        records += [record for _, record in strategy._propose(parents)]
    sample = (time.perf_counter() - start) / repeats
    episode = strategy.options.branches * strategy.steps
    rng = np.random.default_rng(0)
    batch = [{**r, "reward": float(rng.random())} for r in records[:episode]]
    times = []
    for _ in range(max(3, repeats // 4)):
        strategy.records = list(batch)
        start = time.perf_counter()
        strategy._update()
        times.append(time.perf_counter() - start)
    return sample, float(np.median(times)), episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    table = Table(title="EPNAS controller cost per step (CPU)")
    for column in ("space", "sample 8 branches ms", "update over episode ms",
                   "sequences per update", "step total ms"):
        table.add_column(column, justify="right")
    for name in epnas.spaces.names():
        if not EPNAS.supports(epnas.spaces.get(name)):
            continue
        sample, update, episode = measure(name, args.repeats)
        table.add_row(name, f"{sample * 1e3:.1f}", f"{update * 1e3:.1f}", str(episode),
                      f"{(sample + update) * 1e3:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
