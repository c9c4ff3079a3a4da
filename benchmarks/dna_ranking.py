"""DNA's block-wise ratings against full training, next to the prediction schedule.

A teacher (``--teacher DIR`` with ``genome.json`` + ``model.pt``, or by default a fixed
three-stage layerwise network trained here with the ``full`` schedule) is cut into its
blocks. For every block ``--per-block`` distinct parts of the searched space are drawn
and each is rated once by distillation (the ``distill`` evaluator, fidelity
``block=K``). ``--archs`` distinct architectures are then assembled from random
choices of one rated part per block; DNA scores each by minus the sum of its parts'
ratings, exactly as the ``dna`` strategy ranks assemblies. Every architecture is also
trained with the ``full`` schedule (the reference) and the ``prediction`` schedule.

Printed: Kendall's tau (and Spearman's rho) of the DNA scores and of the prediction
accuracies against the full accuracies, and the compute of each side: DNA's is all of
its block trials (shared by every assembly of the rated parts, however many), the
prediction schedule's one training per architecture; the teacher's one training is
shown apart. Last, the ``dna`` strategy's own assembly of the rated parts under a
params bound of the teacher's size, trained with ``full``, against the teacher. CPU
seconds are printed next to wall seconds (a busy machine inflates the latter).
Results are cached in ``--out``, so a rerun only trains what is missing.

Tiny default (digits, a reduced space; a few minutes on one core):
    python benchmarks/dna_ranking.py
Full run (Fashion-MNIST, the Table-3 channel table, 30 architectures):
    python benchmarks/dna_ranking.py --dataset fashion-mnist --archs 30 --per-block 6 \
        --channels 16,32,64,96 --max-layers 12 --samples 10000 --out runs/bench-dna-fashion
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import epnas
from epnas.evaluators import DistillEvaluator, TrainingEvaluator
from epnas.objective import Objective
from epnas.proxy_study import measure, rank_consistency
from epnas.spaces.layerwise import Layer
from epnas.strategies.dna import assemble
from epnas.trial import Candidate, TrialContext


def default_teacher(space: epnas.Space) -> epnas.Genome:
    """conv -> pool | conv -> pool | conv, 3x3 convs of the space's widest two channels."""
    wide, wider = space.options.channels[-2:]
    return space.genome([Layer(1, "conv", 0, -1, 3, wide, "relu"), Layer(2, "maxpool", 1, -1, 2),
                         Layer(3, "conv", 2, -1, 3, wider, "relu"),
                         Layer(4, "maxpool", 3, -1, 2),
                         Layer(5, "conv", 4, -1, 3, wider, "relu")])


def train_teacher(space: epnas.Space, evaluator: TrainingEvaluator, out: Path) -> dict:
    """Train the default teacher with ``full`` into ``out`` (once); its metrics."""
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    genome = default_teacher(space)
    cpu = time.process_time()
    result = evaluator.evaluate_trial(Candidate(genome, "full"), TrialContext(str(out)))
    if not result.ok:
        raise SystemExit(f"the teacher's training failed: {result.error}")
    (out / "genome.json").write_text(genome.to_json())
    metrics = {**result.metrics, "cpu_seconds": time.process_time() - cpu}
    metrics_path.write_text(json.dumps(metrics))
    return metrics


def rate_parts(distill: DistillEvaluator, parts: list[list[epnas.Genome]], cache: Path,
               identity: dict) -> list[list[dict]]:
    """Every part's distillation result (``distill_loss``, seconds), cached per part."""
    cache.mkdir(parents=True, exist_ok=True)
    rated = []
    for k, row in enumerate(parts):
        results = []
        for part in row:
            ident = json.dumps({**identity, "block": k, "part": part.key}, sort_keys=True)
            path = cache / f"{k}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            cpu = time.process_time()
            result = distill.evaluate(Candidate(part, f"block={k}"))
            record = {"status": result.status, "error": result.error,
                      **result.metrics, "cpu_seconds": time.process_time() - cpu}
            path.write_text(json.dumps(record))
            results.append(record)
            loss = record.get("distill_loss", math.nan)
            print(f"  block {k} part {len(results)}: loss {loss:.3f} in "
                  f"{record.get('train_seconds', 0):.1f}s")
        rated.append(results)
    return rated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data", help="data set directory (default: the usual places)")
    parser.add_argument("--teacher", help="teacher directory (default: train one here)")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--per-block", type=int, default=4)
    parser.add_argument("--channels", default="8,16,32,64", help="the space's channel table")
    parser.add_argument("--max-layers", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=4, help="distillation epochs per part")
    parser.add_argument("--samples", type=int, help="training images for distillation")
    parser.add_argument("--loss", default="mse_norm", choices=("mse", "mse_norm"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-dna-ranking")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    channels = tuple(int(c) for c in args.channels.split(","))
    space = epnas.spaces.get("layerwise", channels=channels, max_layers=args.max_layers)
    training = TrainingEvaluator(args.dataset, args.data, seed=args.seed, share=False)
    data = training.loaded
    teacher_dir = Path(args.teacher) if args.teacher else out / "teacher"
    teacher = {} if args.teacher else train_teacher(space, training, teacher_dir)
    distill = DistillEvaluator(str(teacher_dir), args.dataset, args.data, seed=args.seed,
                               epochs=args.epochs, samples=args.samples, loss=args.loss)
    plan = distill.block_plan()
    rng = np.random.default_rng(args.seed)
    parts = []
    for k, (inp, outp) in enumerate(plan):
        drawn: dict[str, epnas.Genome] = {}
        while len(drawn) < args.per_block:
            part = space.sample_block(rng, k, len(plan), inp, outp)
            drawn.setdefault(part.key, part)
        parts.append(list(drawn.values()))
    print(f"{data.name}: teacher {teacher_dir} ({len(plan)} blocks: "
          f"{' -> '.join('x'.join(map(str, o)) for _, o in plan)}); {args.per_block} parts "
          f"per block, {torch.get_num_threads()} thread(s)")
    identity = {"teacher": str(teacher_dir), "dataset": args.dataset, "seed": args.seed,
                "epochs": args.epochs, "samples": args.samples, "loss": args.loss}
    rated = rate_parts(distill, parts, out / "dna", identity)
    ratings = [[r["distill_loss"] if r["status"] == "done" else math.inf for r in row]
               for row in rated]

    choices = list(itertools.product(*(range(len(row)) for row in parts)))
    picked = rng.permutation(len(choices))[: args.archs]
    archs, scores = [], []
    for index in picked:
        choice = choices[index]
        archs.append(space.assemble([parts[k][j] for k, j in enumerate(choice)]))
        scores.append(-sum(ratings[k][j] for k, j in enumerate(choice)))
    print(f"{len(archs)} assembled architectures of {len(choices)} possible")

    def progress(side: str):
        def report(index: int, m: epnas.proxy_study.Measurement) -> None:
            if not m.cached:
                print(f"  {side} {index + 1}/{len(archs)}: {100 * (m.accuracy or 0):.2f}% "
                      f"in {m.metrics.get('train_seconds', 0):.1f}s")
        return report

    full = measure(training, archs, "full", out / "train", progress("full"))
    prediction = measure(training, archs, "prediction", out / "train", progress("prediction"))
    ok = [i for i in range(len(archs)) if full[i].accuracy is not None
          and prediction[i].accuracy is not None and math.isfinite(scores[i])]
    reference = [full[i].accuracy for i in ok]
    dna_rank = rank_consistency([scores[i] for i in ok], reference)
    pred_rank = rank_consistency([prediction[i].accuracy for i in ok], reference)

    def total(rows: list, what: str) -> float:
        return sum(r.get(what) or 0.0 for r in rows)

    blocks = [r for row in rated for r in row]
    dna_cost = {w: total(blocks, w) for w in ("train_seconds", "cpu_seconds")}
    pred_cost = {w: total([prediction[i].metrics for i in ok], w)
                 for w in ("train_seconds", "cpu_seconds")}
    full_cost = {w: total([full[i].metrics for i in ok], w)
                 for w in ("train_seconds", "cpu_seconds")}
    best_full = max(reference)
    # the strategy's own choice: the best-rated assembly with at most the teacher's params
    teacher_genome = epnas.load_genome((teacher_dir / "genome.json").read_text())
    teacher_params = epnas.cost(teacher_genome, data.input_shape, data.num_classes).params
    chosen = assemble(space, plan, parts, ratings, Objective.of([f"params::{teacher_params}"]),
                      training.costs)
    assembled = None
    if chosen is not None:
        trained = measure(training, [chosen.genome], "full", out / "train")[0]
        assembled = {"accuracy": trained.accuracy, "params": training.costs(chosen.genome)[
            "params"], "describe": space.describe(chosen.genome), "rating": chosen.rating}
    summary = {
        "dataset": data.name, "archs": len(ok), "blocks": len(plan),
        "per_block": args.per_block, "block_trials": len(blocks),
        "dna": {**dna_rank, **dna_cost}, "prediction": {**pred_rank, **pred_cost},
        "full": full_cost, "teacher": teacher,
        "dna_top_full_accuracy": reference[int(np.argmax([scores[i] for i in ok]))],
        "best_full_accuracy": best_full, "teacher_params": teacher_params,
        "assembled": assembled,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{'':12}{'Kendall tau':>12}{'Spearman':>10}{'wall s':>9}{'CPU s':>9}")
    for name, rank, cost in (("DNA", dna_rank, dna_cost), ("prediction", pred_rank, pred_cost),
                             ("full", None, full_cost)):
        tau = f"{rank['kendall_tau']:.3f}" if rank else "-"
        rho = f"{rank['spearman_rho']:.3f}" if rank else "-"
        print(f"{name:12}{tau:>12}{rho:>10}{cost['train_seconds']:>9.1f}"
              f"{cost['cpu_seconds']:>9.1f}")
    if teacher:
        print(f"teacher (once): {100 * teacher['accuracy']:.2f}% in "
              f"{teacher['train_seconds']:.1f}s wall, {teacher['cpu_seconds']:.1f}s CPU")
    if assembled is not None:
        print(f"assembled by dna under params <= the teacher's {teacher_params:,}: "
              f"{100 * (assembled['accuracy'] or 0):.2f}% with full training at "
              f"{assembled['params']:,} params ({assembled['describe']})")
    ratio = pred_cost["cpu_seconds"] / dna_cost["cpu_seconds"] if dna_cost["cpu_seconds"] else 0
    print(f"DNA costs 1/{ratio:.1f} of the prediction schedule's CPU time; the architecture "
          f"DNA ranks first reaches {100 * summary['dna_top_full_accuracy']:.2f}% with full "
          f"training (best of the {len(ok)}: {100 * best_full:.2f}%); wrote "
          f"{out / 'summary.json'}")


if __name__ == "__main__":
    main()
