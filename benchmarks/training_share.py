"""Share of wall time the workers spend training, in a real 2-worker digits search.

    python benchmarks/training_share.py [--trials 48] [--strategies random evolution epnas]
                                        [--ray]

Runs a real search (training evaluator, digits, the default ``prediction`` schedule,
each strategy's ``quick`` preset where it has one) with 2 local single-threaded worker
processes, side by side with elastic threads off and on (on: when a batch is down to
its last trial, the idle worker's core is lent to it), and with ``--ray`` also with 2
actors on a local Ray. The workers' wall time, ``workers x wall`` of ``study.run()``,
is split into:

* **training**: the sum of the trials' ``train_seconds``;
* **in trial, not training**: building the network, cost model, validation pass;
* **waiting in a batch**: a worker done with its trial while another still trains
  (EPNAS steps are synchronous: a step is told once all its trials are done);
* **start-up and framework**: from creating the ``Study`` (which starts the workers:
  fork, imports, loading the data) to its first trial, and the store, strategy and
  dispatch between batches.

``cores training`` counts each trial's training time times the mean threads it trained
with (more than 1 while it had a lent core): the share of the cores' time spent
training, which is the target (>= 90%). It is also given from the first trial's start
(without worker start-up), which is what a long search converges to.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from epnas import spaces, strategies
from epnas.config import StudyConfig
from epnas.study import Study, strategy_options

WORKERS = 2


def measure(name: str, trials: int, out: Path, ray: bool, elastic: bool) -> dict[str, float]:
    """Seconds of each part of ``WORKERS x wall`` for one search."""
    strategy_class = strategies.STRATEGIES.resolve(name)[1]
    preset = "quick" if "quick" in strategy_class.presets else None
    config = StudyConfig(strategy=name, evaluator="training", preset=preset).resolved()
    strategy = strategies.get(name, spaces.get("layerwise"), seed=0, **strategy_options(config))
    start = time.time()  # the study starts its workers when it is created
    study = Study(strategy=strategy, evaluator="training", dataset="digits", trials=trials,
                  workers=WORKERS, out=out, ray="local" if ray else None,
                  elastic_threads=elastic)
    with study:
        study.run()
        wall = time.time() - start
        records = [t for t in study.trials() if t.start_time is not None and t.source is None]
    train = sum(t.metrics.get("train_seconds", 0.0) for t in records)
    cores = sum(t.metrics.get("train_seconds", 0.0) * t.metrics.get("threads", 1.0)
                for t in records)
    in_trial = sum(t.end_time - t.start_time for t in records)
    batches: dict[int, list] = defaultdict(list)
    for t in records:
        batches[t.batch].append(t)
    spans = sum(max(t.end_time for t in ts) - min(t.start_time for t in ts)
                for ts in batches.values())
    first = min(t.start_time for t in records)
    return {"wall": wall, "train": train, "cores": cores, "in_trial": in_trial - train,
            "waiting": WORKERS * spans - in_trial, "rest": WORKERS * (wall - spans),
            "startup": first - start, "trials": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48, help="trials per search")
    parser.add_argument("--strategies", nargs="+", default=["random", "evolution", "epnas"])
    parser.add_argument("--ray", action="store_true", help="also with 2 actors on a local Ray")
    args = parser.parse_args()
    print(f"{'strategy':<10}{'executor':<18}{'trials':>7}{'wall s':>8}{'training':>10}"
          f"{'in trial':>10}{'waiting':>9}{'start+rest':>12}{'cores training':>16}"
          f"{'w/o start-up':>14}")
    runs = [("processes", False, False), ("processes+elastic", False, True)]
    if args.ray:
        runs.append(("ray", True, False))
    for strategy in args.strategies:
        for label, ray, elastic in runs:
            with tempfile.TemporaryDirectory() as tmp:
                m = measure(strategy, args.trials, Path(tmp) / "run", ray, elastic)
            total = WORKERS * m["wall"]
            steady = WORKERS * (m["wall"] - m["startup"])
            parts = [m["train"], m["in_trial"], m["waiting"], m["rest"]]
            shares = "".join(f"{100 * p / total:>{w}.1f}%" for p, w in zip(parts, (9, 9, 8, 11)))
            print(f"{strategy:<10}{label:<18}{m['trials']:>7.0f}{m['wall']:>8.1f}{shares}"
                  f"{100 * m['cores'] / total:>15.1f}%{100 * m['cores'] / steady:>13.1f}%",
                  flush=True)
    print("target: cores training >= 90% of the workers' wall time")


if __name__ == "__main__":
    main()
