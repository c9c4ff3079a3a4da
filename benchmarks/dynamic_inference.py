"""Dynamic (early-exit) networks searched on a once-for-all supernet against static
sub-networks and a hand-designed multi-exit baseline (ENAS4D's evidence, issue 17).

A supernet of the ``multistage`` space (``--supernet DIR``, or trained here into
``OUT/supernet`` with the digits settings of docs/dynamic.md) is searched with the
``supernet`` evaluator by ``--strategy`` (``evolution``) for ``--trials`` trials per
search. Budgets are caps on FLOPs per input, as fractions (``--caps``) of the largest
network's static FLOPs. At each cap:

* **dynamic**: a search under ``--constraint avg_flops::CAP`` (thresholds chosen per
  network under the cap, the evaluator's rule); the most accurate of the best networks
  of the searches at this cap and the lower ones, with the thresholds chosen for it at
  this cap or a lower one (the coordinate search may end lower under a looser cap);
* **static**: a search under ``--constraint static_flops::CAP`` with no early exit
  (thresholds no confidence reaches: the last exit answers), each network costed without
  its earlier exit heads; the most accurate of the best networks of the searches at this
  cap and the lower ones;
* **baseline**: the largest network of the space with the same exits, its thresholds
  chosen by the same rule under the cap or a lower one (the hand-designed multi-exit
  network).

Every search starts from the strategy's random samples, or with ``--start largest`` from
the largest network of the space (evolution and random search evaluate it first; 50
random samples rarely reach the networks above half the largest's FLOPs).

Choices are made on the validation split (as the search makes them); each chosen
network is also measured on the test split at the same thresholds, which nothing was
chosen on. Targets (issue 17): at the accuracy of the best static sub-network the
dynamic network needs at most 60 % of its FLOPs; the dynamic network beats the
baseline at every cap. Both are judged on validation and on test.

``--profile N`` only profiles the exits (no searches): for the largest network and N
random ones, each exit's validation accuracy and FLOPs, the oracle's average FLOPs at
the static accuracy (each input out at the first exit that gets it right: a bound for
any thresholds) and what the evaluator's thresholds reach without a cap.

Writes ``OUT/dynamic_inference.json`` (the table) and ``OUT/dynamic_inference.png`` (the
curves) and prints the table.

Tiny default (digits, a supernet trained here for about a minute; a few minutes in all):
    python benchmarks/dynamic_inference.py
Full run (Fashion-MNIST, the supernet of docs/dynamic.md; about 35 minutes of training
and 30 of searching on one core):
    epnas supernet train --dataset fashion-mnist --out runs/supernet-fmnist \\
        --space-opt widths=16,32,48,64 --space-opt strides=2,2,1,1 \\
        --space-opt stem_channels=8 --space-opt expands=2,3,4 --space-opt kernels=3,5 \\
        --space-opt depths=1,2 --space-opt resolutions=20,24,28 \\
        --epochs-per-phase 3,2,2,2 --opt subnets=1 --opt precision=fp32
    python benchmarks/dynamic_inference.py --supernet runs/supernet-fmnist --trials 50 \\
        --caps 0.3,0.5,0.75,1.0 --start largest --out runs/bench-dynamic-fmnist
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from epnas import spaces, strategies
from epnas.evaluators.supernet import Outcome, SupernetEvaluator
from epnas.spaces.multistage.genome import MultistageGenome
from epnas.study import Study
from epnas.supernet import SupernetTraining, recalibrate
from epnas.supernet.training import exit_logits

DIGITS = {"stages": 2, "widths": (8, 16), "strides": (1, 2), "stem_channels": 8,
          "depths": (1, 2), "kernels": (3, 5), "expands": (1, 2), "resolutions": (8, 12)}
TARGET_RATIO = 0.6


class Measured:
    """One genome's exits on the validation and test splits."""

    def __init__(self, evaluator: SupernetEvaluator, genome: MultistageGenome) -> None:
        supernet, data, batches = evaluator.loaded
        self.genome = genome
        flops = evaluator.exit_flops(genome)
        net = recalibrate(supernet.subnet(genome), batches)
        self.splits: dict[str, Outcome] = {}
        for split, (x, y) in {"val": (data.val_x, data.val_y),
                              "test": (data.test_x, data.test_y)}.items():
            self.splits[split] = Outcome.of(exit_logits(net, x, data), y, evaluator.criterion,
                                            flops)
        self.static = evaluator.static_flops(genome)

    def identity(self) -> dict[str, Any]:
        """The genome's key and its JSON (so a found network can be rebuilt, sliced or
        retrained from the table: the benchmark's studies keep no run directory)."""
        return {"genome": self.genome.key, "json": json.loads(self.genome.to_json())}

    def at(self, cap: float) -> dict[str, Any]:
        """Thresholds chosen on validation under ``cap``; both splits measured at them."""
        taus = self.splits["val"].choose(cap)
        row: dict[str, Any] = self.identity()
        for split, outcome in self.splits.items():
            accuracy, avg_flops, share = outcome(taus)
            row[split] = {"accuracy": accuracy, "avg_flops": avg_flops,
                          "share": [float(s) for s in share]}
        row["feasible"] = row["val"]["avg_flops"] <= cap * (1 + 1e-9)
        return row

    def static_row(self) -> dict[str, Any]:
        row: dict[str, Any] = self.identity()
        for split, outcome in self.splits.items():
            row[split] = {"accuracy": float(outcome.correct[-1].mean()),
                          "avg_flops": self.static}
        return row


def oracle_flops(outcome: Outcome) -> float:
    """The least average FLOPs at which any assignment of inputs to exits keeps the last
    exit's accuracy: each input pays for the first exit that classifies it right (one
    that none does, exit 0's), and only the cheapest of the right ones are kept, as many as
    the last exit gets right. A bound for every threshold rule."""
    right = outcome.correct.any(0)
    first = np.where(right, outcome.correct.argmax(0), 0)
    need = int(np.ceil(outcome.correct[-1].sum()))
    paid = np.sort(outcome.flops[first][right])[:need].sum()
    return float((paid + (len(first) - need) * outcome.flops[0]) / len(first))


def exit_profile(evaluator: SupernetEvaluator, count: int, seed: int) -> list[dict[str, Any]]:
    """The largest network and ``count`` random ones (drawn with ``seed``) on validation:
    each exit's accuracy and FLOPs, the oracle's FLOPs at the static accuracy, and the
    evaluator's thresholds without a cap."""
    supernet = evaluator.loaded[0]
    space = spaces.get("multistage", **supernet.options.model_dump())
    rng = np.random.default_rng(seed)
    rows = []
    for name, genome in [("largest", supernet.largest()),
                         *((f"random {i}", space.sample(rng)) for i in range(count))]:
        outcome = Measured(evaluator, genome).splits["val"]
        accuracy, avg_flops, _ = outcome(outcome.choose(None))
        rows.append({"network": name, "genome": genome.key,
                     "exit_accuracy": [float(a) for a in outcome.correct.mean(1)],
                     "exit_flops": [float(f) for f in outcome.flops],
                     "oracle_flops": oracle_flops(outcome),
                     "chosen_accuracy": accuracy, "chosen_flops": avg_flops})
    return rows


def print_profile(rows: list[dict[str, Any]]) -> None:
    print("network   | exits' accuracy % | exit MFLOPs | oracle at static accuracy "
          "(% of the network) | evaluator's thresholds, no cap")
    for r in rows:
        whole = r["exit_flops"][-1]
        print(f"{r['network']:9} | {' '.join(f'{a * 100:.1f}' for a in r['exit_accuracy'])} | "
              f"{' '.join(f'{f / 1e6:.2f}' for f in r['exit_flops'])} | "
              f"{r['oracle_flops'] / whole * 100:.0f} % | {r['chosen_accuracy'] * 100:.1f} % "
              f"at {r['chosen_flops'] / whole * 100:.0f} %")


def supernet_dir(args: argparse.Namespace) -> Path:
    if args.supernet:
        return Path(args.supernet)
    out = Path(args.out) / "supernet"
    epochs = tuple(map(int, args.epochs_per_phase.split(",")))
    training = SupernetTraining(out, "digits", space_options=DIGITS, device="cpu",
                                options={"epochs_per_phase": epochs, "batch_size": 64})
    if not training.finished:
        started = time.time()
        training.run()
        print(f"supernet trained in {time.time() - started:.0f} s: {out}")
    return out


def search(evaluator: SupernetEvaluator, constraint: str, args: argparse.Namespace,
           seed: int) -> MultistageGenome | None:
    """The best feasible genome of one search of the supernet (None: none feasible)."""
    supernet = evaluator.loaded[0]
    space = spaces.get("multistage", **supernet.options.model_dump())
    strategy = strategies.get(args.strategy, space=space, seed=seed)
    if args.start == "largest":  # the first member; its mutations reach the large networks
        strategy.start_from([supernet.largest()])
    study = Study(strategy=strategy, evaluator=evaluator, constraints=[constraint],
                  trials=args.trials)
    summary = study.run()
    best = summary.best
    return best.genome if best is not None and best.feasible else None  # type: ignore[return-value]


def curve(dynamic: SupernetEvaluator, static: SupernetEvaluator, args: argparse.Namespace,
          caps: list[float]) -> list[dict]:
    measured: dict[str, Measured] = {}

    def measure(genome: MultistageGenome) -> Measured:
        if genome.key not in measured:
            measured[genome.key] = Measured(dynamic, genome)
        return measured[genome.key]

    def most_accurate(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(rows, key=lambda r: (r["val"]["accuracy"], -r["val"]["avg_flops"]),
                   default=None)

    largest = measure(dynamic.loaded[0].largest())
    table: list[dict[str, Any]] = []
    dynamic_found: list[Measured] = []
    static_found: list[Measured] = []
    # rows (network and thresholds) chosen under the lower caps: they meet this one too,
    # and the thresholds' coordinate search under a looser cap may end lower
    dynamic_rows: list[dict[str, Any]] = []
    baseline_rows: list[dict[str, Any]] = []
    for i, cap in enumerate(sorted(caps)):
        dynamic.cap = cap
        found = search(dynamic, f"avg_flops::{cap:.0f}", args, args.seed + i)
        dynamic_found += [measure(found)] if found is not None else []
        found = search(static, f"static_flops::{cap:.0f}", args, args.seed + i)
        static_found += [measure(found)] if found is not None else []
        # what the searches up to this budget found (a network found under a lower cap
        # meets this one; a dynamic one's thresholds are chosen again under this cap)
        dynamic_rows += [r for r in (m.at(cap) for m in dynamic_found) if r["feasible"]]
        baseline_rows += [r for r in [largest.at(cap)] if r["feasible"]]
        table.append({"cap": cap, "dynamic": most_accurate(dynamic_rows),
                      "static": most_accurate([m.static_row() for m in static_found
                                               if m.static <= cap]),
                      "baseline": most_accurate(baseline_rows)})
        print(f"cap {cap:,.0f}: searched", flush=True)
    return table


def targets(table: list[dict], split: str) -> dict[str, Any]:
    """The issue's two targets on one split."""
    statics = [row["static"] for row in table if row["static"]]
    top = max(statics, key=lambda r: (r[split]["accuracy"], -r[split]["avg_flops"]))
    reach = [row["dynamic"][split]["avg_flops"] for row in table if row["dynamic"]
             and row["dynamic"][split]["accuracy"] >= top[split]["accuracy"]]
    ratio = min(reach) / top[split]["avg_flops"] if reach else None
    pairs = [(row["dynamic"][split]["accuracy"], row["baseline"][split]["accuracy"])
             for row in table if row["dynamic"] and row["baseline"]]
    return {"best_static_accuracy": top[split]["accuracy"],
            "best_static_flops": top[split]["avg_flops"],
            "dynamic_flops_ratio": ratio,
            "ratio_target_met": ratio is not None and ratio <= TARGET_RATIO,
            "caps_dynamic_beats_baseline": sum(d > b for d, b in pairs),
            "caps_tied": sum(d == b for d, b in pairs), "caps_compared": len(pairs)}


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = {"dynamic": ("o-", "#0072b2"), "static": ("s--", "#d55e00"),
              "baseline": ("^:", "#009e73")}
    for name, (style, colour) in styles.items():
        for split, alpha in (("val", 1.0), ("test", 0.4)):
            points = sorted({(row[name][split]["avg_flops"], row[name][split]["accuracy"] * 100)
                             for row in table if row[name]})
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, color=colour, alpha=alpha, label=f"{name} ({split})")
    ax.set_xlabel("average FLOPs per input")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("dynamic vs static sub-networks vs multi-exit baseline (faint: test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", metavar="DIR", help="a trained supernet (default: train "
                   "a small digits one into OUT/supernet)")
    p.add_argument("--out", default="runs/bench-dynamic")
    p.add_argument("--strategy", default="evolution", help="search strategy (any registered)")
    p.add_argument("--trials", type=int, default=40, help="trials per search")
    p.add_argument("--caps", default="0.3,0.45,0.6,0.75,0.9,1.0",
                   help="FLOPs caps as fractions of the largest network's")
    p.add_argument("--start", default="random", choices=("random", "largest"),
                   help="how every search starts: the strategy's random samples, or the "
                   "largest network of the space first (random search and evolution "
                   "evaluate it first)")
    p.add_argument("--criterion", default="max_softmax", choices=("max_softmax", "entropy"))
    p.add_argument("--epochs-per-phase", default="4,2,2,2",
                   help="when training the default supernet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, metavar="N", default=None,
                   help="only profile the exits of the largest network and N random ones "
                   "(drawn with seed + 1): no searches; writes OUT/exit_profile.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = supernet_dir(args)
    evaluator = SupernetEvaluator(str(path), criterion=args.criterion, device="cpu")
    exits = len(evaluator.meta["space_options"]["widths"])
    never = [2.0 if args.criterion == "max_softmax" else -1.0] * (exits - 1)
    static = SupernetEvaluator(str(path), criterion=args.criterion, thresholds=never,
                               device="cpu")
    if args.profile is not None:
        rows = exit_profile(evaluator, args.profile, args.seed + 1)
        (out / "exit_profile.json").write_text(json.dumps(rows, indent=1) + "\n")
        print_profile(rows)
        return {"profile": rows}
    full = Measured(evaluator, evaluator.loaded[0].largest()).static
    caps = [math.ceil(float(c) * full) for c in args.caps.split(",")]
    started = time.time()
    table = curve(evaluator, static, args, caps)
    result = {"supernet": str(path), "strategy": args.strategy, "trials": args.trials,
              "start": args.start,
              "criterion": args.criterion,
              "largest_static_flops": full, "seconds": time.time() - started,
              "targets": {split: targets(table, split) for split in ("val", "test")},
              "table": table}
    (out / "dynamic_inference.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(table, out / "dynamic_inference.png")
    print(f"{args.strategy} searches of {args.trials} trials on {path}; caps as fractions of "
          f"the largest static network's {full:.0f} FLOPs; accuracy % val/test at average "
          "kFLOPs (val)")
    print(f"{'cap':>5} | {'dynamic':>20} | {'static':>20} | {'baseline':>20}")

    def cell(row: dict | None) -> str:
        if row is None:
            return f"{'-':>20}"
        return (f"{row['val']['accuracy'] * 100:5.1f}/{row['test']['accuracy'] * 100:5.1f} "
                f"@ {row['val']['avg_flops'] / 1e3:6.1f}k")

    for row in table:
        print(f"{row['cap'] / full:5.2f} | {cell(row['dynamic'])} | {cell(row['static'])} | "
              f"{cell(row['baseline'])}")
    for split, t in result["targets"].items():
        ratio = t["dynamic_flops_ratio"]
        print(f"{split}: best static {t['best_static_accuracy'] * 100:.1f} % at "
              f"{t['best_static_flops'] / 1e3:.1f}k FLOPs; dynamic reaches it at "
              f"{'never' if ratio is None else f'{ratio * 100:.0f} %'} of those FLOPs "
              f"(target <= {TARGET_RATIO * 100:.0f} %: "
              f"{'met' if t['ratio_target_met'] else 'not met'}); dynamic beats the "
              f"baseline at {t['caps_dynamic_beats_baseline']}/{t['caps_compared']} caps "
              f"({t['caps_tied']} tied)")
    print(f"table: {out / 'dynamic_inference.json'}, plot: {out / 'dynamic_inference.png'}")
    return result


if __name__ == "__main__":
    main()
