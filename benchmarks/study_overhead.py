"""Framework overhead per trial: store + strategy + dispatch, with an evaluator that costs nothing.

    python benchmarks/study_overhead.py [--trials 1000] [--pool-trials 400] [--no-ray]

Runs the same search (random search, and EPNAS for comparison, on ``layerwise``) with
an instant evaluator: in memory, in a run directory (SQLite store, checkpoints,
trials.csv), in a run directory with a pool of 2 worker processes, and with 2 Ray
actors on a local Ray instance (workers started and warmed up before timing). Prints
milliseconds per trial side by side; the target is under 5 ms per trial inline.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

import epnas
from epnas.evaluators import Evaluator
from epnas.executors import EvaluatorSpec, Executor, Job, ProcessExecutor, RayExecutor
from epnas.study import Study
from epnas.trial import Candidate, Result


class Instant(Evaluator):
    """A fixed accuracy per genome from its key, constant costs: no work at all."""

    default_fidelity = "full"

    def evaluate(self, candidate: Candidate) -> Result:
        u = int(hashlib.sha256(candidate.key.encode()).hexdigest()[:8], 16) / 16**8
        return Result("done", {"accuracy": u, "params": 5e4, "flops": 1e6, "intensity": 2.0})


SPEC = f"{Path(__file__).stem}:Instant"  # importable by workers: the script's folder is on sys.path


def timed(strategy: str, trials: int, out: Path | None, executor: Executor | None = None) -> float:
    """Milliseconds per trial of one study (worker start-up excluded)."""
    if executor is not None:
        genome = epnas.spaces.get("layerwise").sample(np.random.default_rng(0))
        jobs = [Job(i, Candidate(genome)) for i in range(executor.workers)]
        list(executor.run(jobs))  # start them
    # the paper preset: EPNAS's own schedule (1,200 candidates) outlasts the budget
    preset = "paper" if strategy == "epnas" else None
    study = Study(space="layerwise", strategy=strategy, evaluator=SPEC, trials=trials,
                  max_params="100k", out=out, executor=executor, seed=0, preset=preset)
    start = time.perf_counter()
    with study:
        study.run()
        done = len(study.trials())
    return (time.perf_counter() - start) / done * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per inline run")
    parser.add_argument("--pool-trials", type=int, default=400,
                        help="trials per process-pool and Ray run")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray column")
    args = parser.parse_args()
    print(f"{'strategy':<10}{'in memory':>12}{'run dir':>12}{'2 processes':>14}"
          f"{'2 Ray actors':>14}   (ms per trial)")
    for strategy in ("random", "epnas"):
        with tempfile.TemporaryDirectory() as tmp:
            memory = timed(strategy, args.trials, None)
            stored = timed(strategy, args.trials, Path(tmp) / "inline")
            pooled = timed(strategy, args.pool_trials, Path(tmp) / "pool",
                           ProcessExecutor(EvaluatorSpec(SPEC), 2))
            ray = float("nan")
            if not args.no_ray:
                ray = timed(strategy, args.pool_trials, Path(tmp) / "ray",
                            RayExecutor(EvaluatorSpec(SPEC), 2, num_cpus=2))
        print(f"{strategy:<10}{memory:>12.2f}{stored:>12.2f}{pooled:>14.2f}{ray:>14.2f}")
    print("target: < 5 ms per trial inline (framework only; random search's own cost is "
          "negligible, EPNAS adds its policy network)")


if __name__ == "__main__":
    main()
