"""Parameter sharing along a chain of progressive transformations, with and without warm start.

For every seed: sample a start network (under a parameter and FLOPs cap), then make
``--steps`` EPNAS steps from it, each a random scale decision per layer group and one
insert/remove/keep decision applied with ``space.apply``, as the EPNAS strategy makes
them. Every network of the chain is trained twice with the same short budget (the
prediction schedule cut to ``--epochs``, same seed): *cold* from its seeded
initialisation, and *warm* from a parameter-sharing dictionary that holds the warm-trained
weights of the networks before it in the chain (merged after each step, as a study does).
Prints validation accuracy per step (mean over seeds), the mean gain of warm over cold
over the transformed networks, and the time ratio. Both variants run side by side in
one process, after an untimed first training, so machine load and set-up affect them
alike.

    python benchmarks/sharing.py --dataset digits --seeds 3
    python benchmarks/sharing.py --dataset fashion-mnist --seeds 3 --samples 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import epnas
from epnas.data import Dataset, load
from epnas.evaluators.training import build_seeded
from epnas.train import schedules, train
from epnas.train.sharing import WeightDictionary, unit_states


def start_network(space: epnas.Space, rng: np.random.Generator, data: Dataset,
                  max_params: float, max_mflops: float) -> epnas.Genome:
    """A random network with at least one conv under the caps (rejection sampling)."""
    while True:
        genome = space.sample(rng)
        cost = epnas.cost(genome, data.input_shape, data.num_classes)
        convs = sum(layer.op in ("conv", "sepconv") for layer in genome.layers)
        if convs and cost.params <= max_params and cost.flops <= max_mflops * 1e6:
            return genome


def chain(space: epnas.Space, start: epnas.Genome, steps: int,
          rng: np.random.Generator) -> list[epnas.Genome]:
    """``start`` and the networks of ``steps`` random EPNAS steps from it."""
    genomes = [start]
    for _ in range(steps):
        genome = genomes[-1]
        for action in space.actions(genome).sample_step(rng):
            genome = space.apply(genome, action)
        genomes.append(genome)
    return genomes


def subset(data: Dataset, samples: int | None, seed: int) -> Dataset:
    """``data`` with a random ``samples`` of its training images (None: all)."""
    if samples is None or samples >= len(data.train_y):
        return data
    index = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
    index = index[:samples]
    return dataclasses.replace(data, train_x=data.train_x[index], train_y=data.train_y[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist, ...")
    parser.add_argument("--data", default=None, help="where the data set's files are")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="EPNAS steps along each chain")
    parser.add_argument("--epochs", type=float, default=1.0, help="training budget per network")
    parser.add_argument("--samples", type=int, default=None,
                        help="training images used (default: all)")
    parser.add_argument("--max-params", type=float, default=60e3)
    parser.add_argument("--max-mflops", type=float, default=5.0)
    args = parser.parse_args()

    space = epnas.spaces.get("layerwise")
    full = load(args.dataset, args.data)
    schedule = schedules.get("prediction", dataset=full, epochs=args.epochs,
                             warmup_epochs=min(1.0, args.epochs / 4))
    console = Console()
    console.print(f"{args.dataset}: {args.seeds} chains of {args.steps} steps, "
                  f"{args.epochs:g} epoch(s) of the prediction schedule per network "
                  f"({args.samples or len(full.train_y)} training images, "
                  f"{torch.get_num_threads()} threads)")
    # accuracy[variant][step] over seeds; seconds per variant
    accuracy: dict[str, list[list[float]]] = {v: [[] for _ in range(args.steps + 1)]
                                              for v in ("cold", "warm")}
    seconds = {"cold": 0.0, "warm": 0.0}
    params: list[list[int]] = [[] for _ in range(args.steps + 1)]
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        data = subset(full, args.samples, seed)
        start = start_network(space, rng, data, args.max_params, args.max_mflops)
        weights = WeightDictionary()
        for step, genome in enumerate(chain(space, start, args.steps, rng)):
            params[step].append(epnas.cost(genome, data.input_shape, data.num_classes).params)
            if seed == step == 0:  # the process's first training pays one-off set-up (~1 s)
                train(build_seeded(genome, data, seed), data, schedule, seed=seed)
            for variant in ("cold", "warm"):
                model = build_seeded(genome, data, seed)
                if variant == "warm":
                    weights.load_into(genome, model)
                begin = time.perf_counter()
                run = train(model, data, schedule, seed=seed)
                seconds[variant] += time.perf_counter() - begin
                accuracy[variant][step].append(run.accuracy)
                if variant == "warm":
                    weights.merge([(run.accuracy, unit_states(genome, model.cpu()))])
            console.print(f"  seed {seed} step {step}: cold {accuracy['cold'][step][-1]:.2%}"
                          f"  warm {accuracy['warm'][step][-1]:.2%}")

    table = Table(title=f"validation accuracy on {args.dataset}, mean of {args.seeds} seeds")
    for column in ("step", "params (mean)", "cold", "warm", "warm - cold"):
        table.add_column(column, justify="right")
    for step in range(args.steps + 1):
        cold = statistics.mean(accuracy["cold"][step])
        warm = statistics.mean(accuracy["warm"][step])
        table.add_row(str(step) + (" (start)" if step == 0 else ""),
                      f"{statistics.mean(params[step]):,.0f}", f"{cold:.2%}", f"{warm:.2%}",
                      f"{100 * (warm - cold):+.2f} pt")
    console.print(table)
    # Step 0 has nothing to inherit: the gain is measured over the transformed networks.
    cold = [a for step in accuracy["cold"][1:] for a in step]
    warm = [a for step in accuracy["warm"][1:] for a in step]
    gains = [w - c for w, c in zip(warm, cold)]
    console.print(f"steps 1-{args.steps}: cold {statistics.mean(cold):.2%}, warm "
                  f"{statistics.mean(warm):.2%}, warm - cold {100 * statistics.mean(gains):+.2f}"
                  f" pt (warm better in {sum(g > 0 for g in gains)}/{len(gains)} networks); "
                  f"time warm/cold {seconds['warm'] / seconds['cold']:.2f}x")


if __name__ == "__main__":
    main()
