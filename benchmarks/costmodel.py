"""Analytic cost model vs. torch's own counts, side by side.

For every registered space: sample N genomes (each moved by a few progressive actions),
cost them analytically, then build each on the meta device and count parameters and
FLOPs with ``torch.utils.flop_counter.FlopCounterMode``. Prints the worst relative
FLOPs error, the parameter mismatches, and how much faster the analytic model is.

    python benchmarks/costmodel.py [--genomes 1000] [--input-shape 3,32,32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

import epnas


def torch_counts(genome: epnas.Genome, shape: tuple[int, int, int]) -> tuple[int, int]:
    with torch.device("meta"):
        model = epnas.build(genome, shape, 10).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *shape))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=1000)
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.input_shape.split(","))
    table = Table(title=f"cost model vs torch, {args.genomes} genomes per space, input {shape}")
    for column in ("space", "worst FLOPs error", "param mismatches", "analytic s",
                   "torch (meta) s", "speed-up"):
        table.add_column(column, justify="right")
    for name in epnas.spaces.names():
        space = epnas.spaces.get(name)
        rng = np.random.default_rng(args.seed)
        genomes = []
        for _ in range(args.genomes):
            genome = space.sample(rng)
            for _ in range(3):
                genome = space.apply(genome, space.actions(genome).sample_insert(rng))
            genomes.append(genome)
        start = time.perf_counter()
        costs = [epnas.cost(g, shape, 10) for g in genomes]
        analytic = time.perf_counter() - start
        start = time.perf_counter()
        measured = [torch_counts(g, shape) for g in genomes]
        counted = time.perf_counter() - start
        worst = max(abs(c.flops - f) / f for c, (_, f) in zip(costs, measured))
        mismatches = sum(c.params != p for c, (p, _) in zip(costs, measured))
        table.add_row(name, f"{worst:.2e}", str(mismatches), f"{analytic:.3f}",
                      f"{counted:.1f}", f"{counted / analytic:,.0f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
