"""Share of wall time the workers spend training, in a real 2-worker digits search.

    python benchmarks/training_share.py [--trials 16] [--strategies random evolution epnas]
                                        [--ray]

Runs a real search (training evaluator, digits, the ``prediction`` schedule) with 2
local worker processes (``--ray``: 2 actors on a local Ray as well) for each strategy,
with the strategy's ``lookahead`` (batches of up to lookahead x workers candidates) and
with batches of one candidate per worker, and splits the workers' wall time,
``workers x wall`` of ``study.run()``:

* **training**: the sum of the trials' ``train_seconds`` (the target: >= 90%);
* **in trial, not training**: building the network, cost model, validation pass;
* **waiting in a batch**: a worker done with its trial while the other still trains
  (steps are synchronous: a batch is told in ask order once it is complete);
* **start-up and framework**: worker start (fork, imports, loading the data), store,
  strategy and dispatch between batches.

The share is also given without start-up (from the first trial's start), which is what
a long search converges to. Prints one line per strategy and executor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from itertools import product
from pathlib import Path

from epnas import spaces, strategies
from epnas.config import StudyConfig
from epnas.study import Study, strategy_options

WORKERS = 2


def measure(name: str, trials: int, out: Path, ray: bool, lookahead: bool) -> dict[str, float]:
    """Seconds of each part of ``WORKERS x wall`` for one search."""
    config = StudyConfig(strategy=name, evaluator="training").resolved()
    strategy = strategies.get(name, spaces.get("layerwise"), seed=0, **strategy_options(config))
    if not lookahead:
        strategy.lookahead = 1
    study = Study(strategy=strategy, evaluator="training", dataset="digits", trials=trials,
                  workers=WORKERS, out=out, ray="local" if ray else None)
    with study:
        start = time.time()
        study.run()
        wall = time.time() - start
        records = [t for t in study.trials() if t.start_time is not None and t.source is None]
    train = sum(t.metrics.get("train_seconds", 0.0) for t in records)
    in_trial = sum(t.end_time - t.start_time for t in records)
    batches: dict[int, list] = defaultdict(list)
    for t in records:
        batches[t.batch].append(t)
    spans = sum(max(t.end_time for t in ts) - min(t.start_time for t in ts)
                for ts in batches.values())
    first = min(t.start_time for t in records)
    return {"wall": wall, "train": train, "in_trial": in_trial - train,
            "waiting": WORKERS * spans - in_trial, "rest": WORKERS * (wall - spans),
            "startup": first - start, "trials": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per search")
    parser.add_argument("--strategies", nargs="+", default=["random", "evolution", "epnas"])
    parser.add_argument("--ray", action="store_true", help="also with 2 actors on a local Ray")
    args = parser.parse_args()
    print(f"{'strategy':<10}{'executor':<10}{'batch':<11}{'trials':>7}{'wall s':>8}"
          f"{'training':>10}{'in trial':>10}{'waiting':>9}{'start+rest':>12}"
          f"{'training w/o start-up':>23}")
    for strategy in args.strategies:
        for ray, lookahead in product((False, True) if args.ray else (False,), (True, False)):
            with tempfile.TemporaryDirectory() as tmp:
                m = measure(strategy, args.trials, Path(tmp) / "run", ray, lookahead)
            total = WORKERS * m["wall"]
            steady = WORKERS * (m["wall"] - m["startup"])
            parts = [m["train"], m["in_trial"], m["waiting"], m["rest"]]
            shares = "".join(f"{100 * p / total:>{w}.1f}%" for p, w in zip(parts, (9, 9, 8, 11)))
            batch = "lookahead" if lookahead else "1/worker"
            print(f"{strategy:<10}{'ray' if ray else 'processes':<10}{batch:<11}"
                  f"{m['trials']:>7.0f}"
                  f"{m['wall']:>8.1f}{shares}{100 * m['train'] / steady:>22.1f}%")
    print("target: training >= 90% of the workers' wall time")


if __name__ == "__main__":
    main()
