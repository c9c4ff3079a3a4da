"""Label-free search (UnNAS) against supervised search at equal budget.

For each seed, two searches run with the same space, strategy, trial budget and base
schedule: one rates candidates by a pretext task (default ``pretext=rotation``, no
label read), the other by supervised validation accuracy. The best architecture of
each is then retrained with labels (``epnas retrain``: the ``full`` schedule for
``--retrain-epochs`` on training + validation data) and measured on the test set. The
script prints both test accuracies, their difference (label-free less supervised; the
UnNAS claim is that it is small) and the search times.

The default is a smoke-sized run on the bundled digits (a few minutes on 2 cores):
``python benchmarks/label_free.py``. The comparison of docs/search.md, on Fashion-MNIST:
``python benchmarks/label_free.py --dataset fashion-mnist --trials 100 --strategy
evolution --fidelity-items r=0.5,s=0.1,e=3 --retrain-epochs 20 --seeds 3``.
On one core: ``--max-mflops 25`` puts both searches under the same FLOPs bound, which
bounds the retraining too (an unbounded best of 105 MFLOPs retrains at 160 s an epoch on
Fashion-MNIST); ``--json`` is written after every seed.
With unlabelled images, search on them and retrain on labelled ones: ``--dataset folder
--data UNLABELLED_DIR --retrain-dataset folder --retrain-data LABELLED_DIR`` (the
supervised side then needs labels too: it searches on the retraining data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import epnas
from epnas.retrain import retrain


def search_and_retrain(args: argparse.Namespace, fidelity: str, seed: int,
                       dataset: str, data: str | None, root: Path) -> dict[str, Any]:
    """One search at ``fidelity``, its best retrained with labels; the figures."""
    out = root / f"{fidelity.replace(',', '_').replace('=', '-')}-seed{seed}"
    start = time.perf_counter()
    with epnas.Study(space="layerwise", strategy=args.strategy, evaluator="training",
                     dataset=dataset, data=data, fidelity=fidelity, trials=args.trials,
                     seed=seed, out=str(out), workers=1, max_mflops=args.max_mflops,
                     space_options={"max_layers": args.max_layers}) as study:
        summary = study.run()
    searched = time.perf_counter() - start
    best = summary.best
    assert best is not None, f"no trial of {fidelity} finished"
    labelled = {"dataset": args.retrain_dataset, "data": args.retrain_data} \
        if args.retrain_dataset else {}
    start = time.perf_counter()
    final = retrain(out, epochs=args.retrain_epochs, seed=seed, **labelled)
    return {"fidelity": fidelity, "seed": seed, "best": best.key,
            "search_accuracy": best.accuracy, "params": best.metrics.get("params"),
            "test_accuracy": final["test_accuracy"], "search_seconds": searched,
            "retrain_seconds": time.perf_counter() - start}


def gaps(rows: list[dict[str, Any]]) -> list[float]:
    """Label-free less supervised test accuracy per seed, in points."""
    return [100 * (a["test_accuracy"] - b["test_accuracy"])
            for a, b in zip(rows[::2], rows[1::2], strict=True)]


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    Path(args.json).write_text(json.dumps({"config": vars(args), "runs": rows,
                                           "gaps": gaps(rows)}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data", help="where the data set's files are")
    parser.add_argument("--pretext", default="rotation",
                        help="the label-free side's task, with its options (jigsaw,grid=2)")
    parser.add_argument("--fidelity-items", default="e=2",
                        help="reduced-setting items both sides share (equal budget)")
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--trials", type=int, default=4, help="trials per search")
    parser.add_argument("--max-layers", type=int, default=4, help="layerwise max_layers")
    parser.add_argument("--max-mflops", type=float, help="both searches under this FLOPs "
                        "bound (bounds the retraining's cost too)")
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--retrain-dataset", help="labelled data to retrain on (default: "
                        "the search's)")
    parser.add_argument("--retrain-data", help="its files")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are FIRST..FIRST+SEEDS-1 (to add seeds to a run)")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    items = f",{args.fidelity_items}" if args.fidelity_items else ""
    label_free = f"pretext={args.pretext}{items}"
    supervised = f"full{items}"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(search_and_retrain(args, label_free, seed, args.dataset, args.data,
                                           root))
            # the supervised side needs labels: it searches on the data it retrains on
            rows.append(search_and_retrain(args, supervised, seed,
                                           args.retrain_dataset or args.dataset,
                                           args.retrain_data if args.retrain_dataset
                                           else args.data, root))
            if args.json:  # each finished seed kept, should a long run be stopped
                write(args, rows)
    print(f"{args.dataset}, {args.strategy}, {args.trials} trials per search, "
          f"{args.seeds} seed(s); best retrained with labels for {args.retrain_epochs} epochs")
    print(f"{'search fidelity':<36}{'seed':>5}{'search acc':>12}{'test acc':>10}"
          f"{'params':>9}{'search s':>10}")
    for r in rows:
        print(f"{r['fidelity']:<36}{r['seed']:>5}{100 * r['search_accuracy']:>11.2f}%"
              f"{100 * r['test_accuracy']:>9.2f}%{r['params'] or 0:>9.0f}"
              f"{r['search_seconds']:>10.1f}")
    points = gaps(rows)
    print(f"label-free less supervised test accuracy: mean {statistics.mean(points):+.2f} "
          f"points ({', '.join(f'{g:+.2f}' for g in points)})")


if __name__ == "__main__":
    main()
