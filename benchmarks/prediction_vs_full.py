"""Performance prediction against full training: time ratio and rank consistency.

Samples ``--archs`` distinct ``layerwise`` architectures on Fashion-MNIST with between
``--min-mflops`` and ``--max-mflops`` forward MFLOPs (the floor leaves out networks
that are little more than the stem, whose ranking tells nothing) and at most
``--max-memory-mb`` of estimated training memory (a FLOPs cap alone admits
memory-bound networks that take 15 minutes where their FLOPs say 2), trains each with the
``full`` schedule and with a cheap fidelity (default ``prediction``; any EcoNAS
setting string works), and prints the summed training time of each side, their ratio
and Kendall's tau / Spearman's rho of the two validation-accuracy rankings.

Results are cached per (architecture, setting) by :func:`epnas.proxy_study.measure`
in ``--out``, so a rerun only trains what is missing. The full trainings are the slow
part: start them first in the background (``--only full``), work on the cheap side
meanwhile, then run without ``--only`` to print the comparison. On a shared machine
the two sides may be timed under different load, so CPU time (which depends far less
on the neighbours) is printed next to wall time; ``--part I/N`` splits the trainings
over N processes.

Run: ``python benchmarks/prediction_vs_full.py`` (12 full trainings of at most about
two minutes each on 2 quiet cores, plus the cheap ones).
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import epnas
from epnas.evaluators.training import TrainingEvaluator
from epnas.flags import parse_options
from epnas.proxy_study import measure, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--min-mflops", type=float, default=0.5)
    parser.add_argument("--max-mflops", type=float, default=2.0)
    parser.add_argument("--max-memory-mb", type=float, default=20.0,
                        help="cap on the cost model's training memory at batch 128: "
                             "memory-bound networks (wide maps, CReLU) train several times "
                             "slower than their FLOPs say")
    parser.add_argument("--cheap", default="prediction", help="fidelity of the cheap side")
    parser.add_argument("--reference", default="full")
    parser.add_argument("--schedule-opt", action="append", metavar="KEY=VALUE",
                        help="schedule field for both sides (part of the cache identity)")
    parser.add_argument("--only", choices=("full", "cheap", "none"),
                        help="train one side only (none: report on what is cached)")
    parser.add_argument("--part", default="0/1", metavar="I/N",
                        help="train only architectures I, I+N, I+2N, ... (split the work "
                             "over N processes; each reports only what is complete)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="Fashion-MNIST directory (default: the usual places)")
    parser.add_argument("--out", default="runs/bench-prediction-vs-full")
    args = parser.parse_args()

    evaluator = TrainingEvaluator("fashion-mnist", args.data, seed=args.seed,
                                  schedule=parse_options(args.schedule_opt, "--schedule-opt"))
    data = evaluator.loaded
    space = epnas.spaces.get("layerwise", sample_min_mflops=args.min_mflops,
                             sample_max_mflops=args.max_mflops,
                             sample_input_shape=data.input_shape,
                             sample_num_classes=data.num_classes)
    rng = np.random.default_rng(args.seed)
    genomes: dict[str, epnas.Genome] = {}
    while len(genomes) < args.archs:
        genome = space.sample(rng)
        costs = epnas.cost(genome, data.input_shape, data.num_classes)
        if costs.as_dict(128)["memory"] <= args.max_memory_mb * 1e6:
            genomes.setdefault(genome.key, genome)
    chosen = list(genomes.values())
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"{len(chosen)} layerwise architectures of {args.min_mflops:g}-{args.max_mflops:g} "
          f"MFLOPs, at most {args.max_memory_mb:g} MB to train, on {data.name}; cache "
          f"{args.out}")

    def progress(side: str):
        def report(index: int, m: epnas.proxy_study.Measurement) -> None:
            acc = "failed" if m.accuracy is None else f"{100 * m.accuracy:6.2f}%"
            speed = m.metrics.get("images_per_second", 0.0)
            how = "cached" if m.cached else "trained"
            print(f"  {side:9s} {index + 1:2d}/{len(chosen)} {m.genome.key} {acc} "
                  f"{m.metrics.get('train_seconds', 0.0):7.1f}s {speed:7.0f} img/s ({how})",
                  flush=True)
        return report

    part, parts = (int(v) for v in args.part.split("/"))
    sides = {"full": args.reference, "cheap": args.cheap}
    runs = {}
    for side in ("full", "cheap"):
        trains = args.only in (None, side)
        runs[side] = measure(evaluator, chosen, sides[side], f"{args.out}/results",
                             progress(side),
                             train=lambda index, t=trains: t and index % parts == part)
    both = [i for i in range(len(chosen)) if runs["full"][i] and runs["cheap"][i]]
    if len(both) < 2:
        print(f"{len(both)} architectures have both results so far; rerun to continue")
        return
    report = summarize([chosen[i] for i in both], [runs["cheap"][i] for i in both],
                       [runs["full"][i] for i in both], data.input_shape, data.num_classes)
    print(f"\n{'key':16s} {'MFLOPs':>7s} {'params':>8s} {'cheap %':>7s} {'full %':>7s} "
          f"{'cheap s':>8s} {'full s':>8s} {'cheap cpu':>9s} {'full cpu':>9s}")

    def pct(v: float | None) -> str:
        return "failed" if v is None else f"{100 * v:.2f}"

    for p in report["pairs"]:
        print(f"{p['key']:16s} {p['mflops']:7.2f} {p['params']:8,d} "
              f"{pct(p['proxy_accuracy']):>7s} {pct(p['reference_accuracy']):>7s} "
              f"{p['proxy_train_seconds'] or 0:8.1f} {p['reference_train_seconds'] or 0:8.1f} "
              f"{p['proxy_cpu_seconds'] or 0:9.1f} {p['reference_cpu_seconds'] or 0:9.1f}")
    print(f"\ncheap side: {args.cheap!r} ({evaluator.schedule(args.cheap)!r})")
    print(f"training time: full {report['reference_train_seconds']:.0f}s, cheap "
          f"{report['proxy_train_seconds']:.0f}s -> {report['time_ratio']:.2f}x cheaper; "
          f"CPU time {report['reference_cpu_seconds']:.0f}s vs "
          f"{report['proxy_cpu_seconds']:.0f}s -> {report['cpu_ratio']:.2f}x (target >= 4x)")
    print(f"Kendall tau {report['kendall_tau']:.3f} (p {report['kendall_p']:.2g}), Spearman "
          f"rho {report['spearman_rho']:.3f} over {report['archs'] - report['failed']} of "
          f"{len(chosen)} architectures (target tau >= 0.6)")


if __name__ == "__main__":
    main()
