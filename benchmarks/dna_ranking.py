"""DNA's block-wise ratings against full training, next to the prediction schedule.

A teacher (``--teacher DIR`` with ``genome.json`` + ``model.pt``, or by default a fixed
three-stage layerwise network trained here with the ``full`` schedule) is cut into its
blocks. For every block ``--per-block`` distinct parts of the searched space are drawn
and each is rated once by distillation (the ``distill`` evaluator, fidelity
``block=K``). ``--archs`` distinct architectures are then assembled from random
choices of one rated part per block; DNA scores each by minus the sum of its parts'
ratings made comparable between blocks (``--aggregate``), exactly as the ``dna``
strategy ranks assemblies. Every architecture is also trained with the ``full``
schedule (the reference) and the ``prediction`` schedule.

Printed: how coarse the reference is (distinct ``full`` accuracies), each block's
ratings and how they alone rank the assemblies, the tau of every aggregate, then
Kendall's tau (and Spearman's rho) of the DNA scores and of the prediction accuracies
against the full accuracies, and the compute of each side: DNA's is all of its block
trials (shared by every assembly of the rated parts, however many), the prediction
schedule's one training per architecture; the teacher's one training is shown apart.
Last, the ``dna`` strategy's own assembly of the rated parts with fewer params than the
teacher, trained with ``full``, against the teacher (``--repeats N``: each trained N
times, their means compared): from scratch with labels
only, or as the ``distill`` evaluator's end-to-end trial with ``--init parts`` (its
blocks start from their parts' distilled weights) and ``--kd A`` (knowledge distillation
from the teacher's logits, ``--kd-temperature``), at ``--assembly-lr``, or with the
``prediction`` schedule (``--assembly-fidelity``). CPU seconds are
printed next to wall seconds (a busy machine inflates the latter). Results are cached in
``--out``, so a rerun only trains what is missing, and a rerun with other rating
options (``--batch-size``, ``--aggregate``, ``--readout``, ...) only rates the parts, and
one with other ``--init``/``--kd``/``--assembly-lr`` only trains the assembly.

Default (Fashion-MNIST cut to 3,000 training and 1,500 validation images, channels
4,8,16,32; about 15 minutes on one core):
    python benchmarks/dna_ranking.py
Digits with half its training set held out for validation (a few minutes):
    python benchmarks/dna_ranking.py --dataset digits --val-fraction 0.5 \
        --train-samples 0 --val-samples 0 --channels 8,16,32,64
Full run (all of Fashion-MNIST, the Table-3 channel table; about a day of CPU):
    python benchmarks/dna_ranking.py --train-samples 0 --val-samples 0 --per-block 6 \
        --channels 16,32,64,96 --max-layers 12 --samples 10000 --out runs/bench-dna-fashion
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import epnas
from epnas.data import Dataset, load
from epnas.evaluators import DistillEvaluator, TrainingEvaluator
from epnas.evaluators.distill import part_file
from epnas.objective import Objective
from epnas.proxy_study import measure, rank_consistency
from epnas.spaces.layerwise import Layer
from epnas.strategies.dna import AGGREGATES, aggregated, assemble
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


def digest(identity: dict, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:length]


def rate_parts(distill: DistillEvaluator, parts: list[list[epnas.Genome]], cache: Path,
               identity: dict, weights: Path) -> list[list[dict]]:
    """Every part's distillation result (``distill_loss``, seconds), cached per part; its
    trained block in ``weights/<k>-<key>/`` (a part cached without one is rated again)."""
    cache.mkdir(parents=True, exist_ok=True)
    rated = []
    for k, row in enumerate(parts):
        results = []
        for part in row:
            path = cache / f"{k}-{digest({**identity, 'block': k, 'part': part.key})}.json"
            directory = weights / f"{k}-{part.key}"
            if path.is_file() and (directory / part_file(k, part.key)).is_file():
                results.append(json.loads(path.read_text()))
                continue
            cpu = time.process_time()
            result = distill.evaluate_trial(Candidate(part, f"block={k}"),
                                            TrialContext(str(directory)))
            record = {"status": result.status, "error": result.error,
                      **result.metrics, "cpu_seconds": time.process_time() - cpu}
            path.write_text(json.dumps(record))
            results.append(record)
            loss = record.get("distill_loss", math.nan)
            print(f"  block {k} part {len(results)}: loss {loss:.3f} in "
                  f"{record.get('train_seconds', 0):.1f}s")
        rated.append(results)
    return rated


def train_assembly(distill: DistillEvaluator, genome: epnas.Genome, keys: list[str],
                   weights: Path, cache: Path, identity: dict, fidelity: str) -> dict:
    """The assembled ``genome`` trained at ``fidelity`` by the distill evaluator's
    end-to-end trial (its init and kd options; its parts' blocks in ``weights``); cached."""
    path = cache / f"assembly-{genome.key}-{digest(identity, 12)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cpu = time.process_time()
    result = distill.evaluate_trial(Candidate(genome, fidelity, {"part_keys": keys}),
                                    TrialContext(str(weights / "assembled")))
    if not result.ok:
        raise SystemExit(f"training the assembly failed: {result.error}")
    metrics = {**result.metrics, "cpu_seconds": time.process_time() - cpu}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return metrics


def dataset(args: argparse.Namespace) -> Dataset:
    """The data set at ``--image-size`` with ``--val-fraction`` held out, then a seeded
    ``--train-samples`` of its training and ``--val-samples`` of its validation images."""
    data = load(args.dataset, args.data, val_fraction=args.val_fraction,
                image_size=args.image_size)
    generator = torch.Generator().manual_seed(args.seed)
    picks = {}
    for split, count in (("train", args.train_samples), ("val", args.val_samples)):
        y = getattr(data, f"{split}_y")
        index = torch.randperm(len(y), generator=generator)[:count] if count else None
        if index is not None:
            picks |= {f"{split}_x": getattr(data, f"{split}_x")[index], f"{split}_y": y[index]}
    return dataclasses.replace(data, **picks)


def ties(accuracies: list[float]) -> dict[str, float]:
    """How coarse a reference is: its distinct values and the share of pairs it ties."""
    pairs = list(itertools.combinations(accuracies, 2))
    return {"distinct": len(set(accuracies)),
            "tied_pairs": sum(a == b for a, b in pairs) / max(len(pairs), 1)}


def block_diagnosis(ratings: list[list[float]], choices: list[tuple[int, ...]],
                    reference: list[float]) -> list[dict[str, float]]:
    """Per block: the spread of its parts' ratings, and how its part's rating alone
    (minus, lower is better) ranks the assemblies against ``reference``."""
    rows = []
    for k, row in enumerate(ratings):
        finite = [r for r in row if math.isfinite(r)]
        alone = [-ratings[k][c[k]] for c in choices]
        rank = rank_consistency(alone, reference) if len(set(alone)) > 1 else {
            "kendall_tau": math.nan, "spearman_rho": math.nan}
        rows.append({"block": k, "min": min(finite, default=math.nan),
                     "median": float(np.median(finite)) if finite else math.nan,
                     "max": max(finite, default=math.nan),
                     "std": float(np.std(finite)) if finite else math.nan,
                     "kendall_tau": rank["kendall_tau"], "spearman_rho": rank["spearman_rho"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data", help="data set directory (default: the usual places)")
    parser.add_argument("--image-size", type=int, help="resize images (default: native)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the official training set held out for validation")
    parser.add_argument("--train-samples", type=int, default=3000,
                        help="training images kept (0: all)")
    parser.add_argument("--val-samples", type=int, default=1500,
                        help="validation images kept (0: all)")
    parser.add_argument("--teacher", help="teacher directory (default: train one here)")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--per-block", type=int, default=4)
    parser.add_argument("--channels", default="4,8,16,32", help="the space's channel table")
    parser.add_argument("--max-layers", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=4, help="distillation epochs per part")
    parser.add_argument("--batch-size", type=int, default=32, help="distillation batch size")
    parser.add_argument("--lr", type=float, default=1e-2, help="distillation learning rate")
    parser.add_argument("--samples", type=int,
                        help="of the training images, those the blocks distil on (default: all)")
    parser.add_argument("--loss", default="mse_norm", choices=("mse", "mse_norm"))
    parser.add_argument("--readout", default="fit", choices=("fit", "affine"),
                        help="the distill evaluator's read-out of a part's output")
    parser.add_argument("--aggregate", default="zscore", choices=AGGREGATES,
                        help="how DNA adds the blocks' ratings (the others are shown too)")
    parser.add_argument("--init", default="scratch", choices=("scratch", "parts"),
                        help="the assembly under the teacher's params starts from scratch or "
                             "from its parts' distilled weights (the distill evaluator's init, "
                             "whose default is parts; scratch here, as before the option)")
    parser.add_argument("--kd", type=float, default=0.0,
                        help="its knowledge-distillation weight (the distill evaluator's kd)")
    parser.add_argument("--kd-temperature", type=float, default=4.0)
    parser.add_argument("--assembly-fidelity", default="full", choices=("full", "prediction"),
                        help="the schedule the assembly is trained with (the dna strategy's "
                             "final trial: prediction by default)")
    parser.add_argument("--assembly-lr", type=float,
                        help="its full schedule's learning rate (default: the schedule's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train the teacher and the assembly this many times each "
                             "(training seeds SEED, SEED+1, ...) and compare their means")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-dna-ranking")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    channels = tuple(int(c) for c in args.channels.split(","))
    space = epnas.spaces.get("layerwise", channels=channels, max_layers=args.max_layers)
    data = dataset(args)
    training = TrainingEvaluator(data, seed=args.seed, share=False)
    setting = {"dataset": args.dataset, "data": args.data, "image_size": args.image_size,
               "val_fraction": args.val_fraction, "train_samples": args.train_samples,
               "val_samples": args.val_samples, "seed": args.seed}
    train_cache = out / ("train-" + hashlib.sha256(
        json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10])
    teacher_dir = Path(args.teacher) if args.teacher else out / "teacher"
    teacher = {} if args.teacher else train_teacher(space, training, teacher_dir)

    def distiller(seed: int) -> DistillEvaluator:
        return DistillEvaluator(str(teacher_dir), data, seed=seed,
                                epochs=args.epochs, samples=args.samples, loss=args.loss,
                                readout=args.readout, batch_size=args.batch_size, lr=args.lr,
                                init=args.init, kd=args.kd,
                                kd_temperature=args.kd_temperature,
                                schedule=None if args.assembly_lr is None else {
                                    "lr": args.assembly_lr})

    distill = distiller(args.seed)
    plan = distill.block_plan()
    rng = np.random.default_rng(args.seed)
    parts = []
    for k, (inp, outp) in enumerate(plan):
        drawn: dict[str, epnas.Genome] = {}
        while len(drawn) < args.per_block:
            part = space.sample_block(rng, k, len(plan), inp, outp)
            drawn.setdefault(part.key, part)
        parts.append(list(drawn.values()))
    print(f"{data.name}: {len(data.train_y)} training, {len(data.val_y)} validation images; "
          f"teacher {teacher_dir} ({len(plan)} blocks: "
          f"{' -> '.join('x'.join(map(str, o)) for _, o in plan)}); {args.per_block} parts "
          f"per block, {torch.get_num_threads()} thread(s)")
    identity = {"teacher": str(teacher_dir), **setting, "epochs": args.epochs,
                "samples": args.samples, "loss": args.loss}
    # options at the values they had before they were options stay out of the identity,
    # so the ratings cached then stay valid
    identity |= {key: value for key, value, before in (
        ("readout", args.readout, "fit"), ("batch_size", args.batch_size, 128),
        ("lr", args.lr, 1e-2)) if value != before}
    weights = out / "dna" / f"parts-{digest(identity, 10)}"
    rated = rate_parts(distill, parts, out / "dna", identity, weights)
    ratings = [[r["distill_loss"] if r["status"] == "done" else math.inf for r in row]
               for row in rated]

    choices = list(itertools.product(*(range(len(row)) for row in parts)))
    picked, archs, seen = [], [], set()
    for index in rng.permutation(len(choices)):  # distinct networks: parts may coincide
        genome = space.assemble([parts[k][j] for k, j in enumerate(choices[index])])
        if len(archs) < args.archs and genome.key not in seen:
            seen.add(genome.key)
            picked.append(choices[index])
            archs.append(genome)
    print(f"{len(archs)} distinct assembled architectures of {len(choices)} choices")

    def progress(side: str):
        def report(index: int, m: epnas.proxy_study.Measurement) -> None:
            if not m.cached:
                print(f"  {side} {index + 1}/{len(archs)}: {100 * (m.accuracy or 0):.2f}% "
                      f"in {m.metrics.get('train_seconds', 0):.1f}s")
        return report

    full = measure(training, archs, "full", train_cache, progress("full"))
    prediction = measure(training, archs, "prediction", train_cache, progress("prediction"))
    scores = {how: [-sum(table[k][j] for k, j in enumerate(c)) for c in picked]
              for how in AGGREGATES for table in [aggregated(ratings, how)]}
    ok = [i for i in range(len(archs)) if full[i].accuracy is not None
          and prediction[i].accuracy is not None and math.isfinite(scores["sum"][i])]
    reference = [full[i].accuracy for i in ok]
    ranks = {how: rank_consistency([s[i] for i in ok], reference) for how, s in scores.items()}
    dna_rank = ranks[args.aggregate]
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
    # the strategy's own choice: the best-rated assembly with fewer params than the teacher
    teacher_genome = epnas.load_genome((teacher_dir / "genome.json").read_text())
    teacher_params = epnas.cost(teacher_genome, data.input_shape, data.num_classes).params
    chosen = assemble(space, plan, parts, aggregated(ratings, args.aggregate),
                      Objective.of([f"params::{teacher_params - 1}"]), training.costs)
    assembled = None
    end_to_end = {"init": args.init, "kd": args.kd, "kd_temperature": args.kd_temperature,
                  **({} if args.assembly_lr is None else {"lr": args.assembly_lr}),
                  **({} if args.assembly_fidelity == "full" else {
                      "fidelity": args.assembly_fidelity})}
    if chosen is not None:
        keys = [parts[k][j].key for k, j in enumerate(chosen.choice)]

        def train_chosen(seed: int) -> dict:
            """The assembly trained end to end, its weights and batches seeded by ``seed``."""
            if args.init == "scratch" and args.kd == 0 and args.assembly_lr is None:
                evaluator = training if seed == args.seed else TrainingEvaluator(
                    data, seed=seed, share=False)
                return measure(evaluator, [chosen.genome], args.assembly_fidelity,
                               train_cache)[0].metrics
            # the first training's identity is the one it had before --repeats existed
            again = {} if seed == args.seed else {"train_seed": seed}
            return train_assembly(distill if seed == args.seed else distiller(seed),
                                  chosen.genome, keys, weights, train_cache,
                                  {**setting, **end_to_end, "parts": identity, **again},
                                  args.assembly_fidelity)

        metrics = train_chosen(args.seed)
        assembled = {"accuracy": metrics.get("accuracy"), "params": training.costs(
            chosen.genome)["params"], "describe": space.describe(chosen.genome),
            "rating": chosen.rating, "genome": chosen.genome.to_dict(), "part_keys": keys,
            "parts_dir": str(weights), **end_to_end,
            **{k: metrics[k] for k in ("init_blocks", "init_tensors", "cpu_seconds")
               if k in metrics}}
        if args.repeats > 1:
            seeds = [args.seed + r for r in range(args.repeats)]
            teachers = [teacher["accuracy"] if seed == args.seed and teacher else measure(
                TrainingEvaluator(data, seed=seed, share=False), [teacher_genome], "full",
                train_cache)[0].accuracy for seed in seeds]
            assembled["repeats"] = {
                "train_seeds": seeds, "teacher": teachers,
                "assembled": [train_chosen(seed).get("accuracy") for seed in seeds]}
    diagnosis = block_diagnosis(ratings, [picked[i] for i in ok], reference)
    dna_scores = scores[args.aggregate]
    summary = {
        "dataset": data.name, "train_images": len(data.train_y),
        "val_images": len(data.val_y), "archs": len(ok), "blocks": len(plan),
        "per_block": args.per_block, "block_trials": len(blocks), "aggregate": args.aggregate,
        "dna": {**dna_rank, **dna_cost}, "prediction": {**pred_rank, **pred_cost},
        "dna_by_aggregate": ranks, "full": full_cost, "teacher": teacher,
        "reference_ties": ties(reference), "per_block_diagnosis": diagnosis,
        "dna_top_full_accuracy": reference[int(np.argmax([dna_scores[i] for i in ok]))],
        "best_full_accuracy": best_full, "teacher_params": teacher_params,
        "assembled": assembled,
        "ratings": ratings, "rows": [
            {"choice": list(picked[i]), "full": full[i].accuracy,
             "prediction": prediction[i].accuracy, "params": full[i].metrics.get("params")}
            for i in ok],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    tied = summary["reference_ties"]
    print(f"full accuracies: {tied['distinct']} distinct of {len(ok)}, "
          f"{100 * tied['tied_pairs']:.1f}% of pairs tied")
    for row in diagnosis:
        print(f"  block {row['block']}: ratings {row['min']:.3f}..{row['max']:.3f} (std "
              f"{row['std']:.3f}); alone, Kendall tau {row['kendall_tau']:.3f} against full")
    print("DNA by aggregate: " + ", ".join(f"{how} tau {r['kendall_tau']:.3f}"
                                           for how, r in ranks.items()))
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
        how = ", ".join(f"{k} {v}" for k, v in end_to_end.items())
        print(f"assembled by dna under fewer params than the teacher's {teacher_params:,}: "
              f"{100 * (assembled['accuracy'] or 0):.2f}% with {args.assembly_fidelity} "
              f"training ({how}) at "
              f"{assembled['params']:,} params ({assembled['describe']})")
    if assembled is not None and "repeats" in assembled:
        runs = assembled["repeats"]
        mine, theirs = (100 * np.array(runs[k], float) for k in ("assembled", "teacher"))
        gaps = mine - theirs
        print(f"over {len(gaps)} trainings (training seeds {runs['train_seeds']}): teacher "
              f"{theirs.mean():.2f}% (sd {theirs.std(ddof=1):.2f}), assembly "
              f"{mine.mean():.2f}% (sd {mine.std(ddof=1):.2f}); assembly - teacher "
              f"{gaps.mean():+.2f} ± {gaps.std(ddof=1) / np.sqrt(len(gaps)):.2f} points")
    ratio = pred_cost["cpu_seconds"] / dna_cost["cpu_seconds"] if dna_cost["cpu_seconds"] else 0
    print(f"DNA costs 1/{ratio:.1f} of the prediction schedule's CPU time; the architecture "
          f"DNA ranks first reaches {100 * summary['dna_top_full_accuracy']:.2f}% with full "
          f"training (best of the {len(ok)}: {100 * best_full:.2f}%); wrote "
          f"{out / 'summary.json'}")


if __name__ == "__main__":
    main()
