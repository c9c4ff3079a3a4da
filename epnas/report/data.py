"""What the report shows, as plain numbers: read from a run directory, no plotting here.

Every plot in the report is drawn from one of these functions, so the numbers behind it
(best-so-far curves, Pareto fronts, the feasible region of a constraint, per-episode
figures) are tested without looking at pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epnas.config import StudyConfig
from epnas.errors import EpnasError
from epnas.objective import Objective
from epnas.store import Store, TrialRecord, holder_pid
from epnas.strategies.dna import rating
from epnas.study import Summary, reported, summarize

OK = ("done", "cached")


@dataclass(frozen=True)
class Run:
    """One run directory as the report sees it.

    Attributes:
        name: the label of the run in plots and tables (its directory name).
        trials: every stored trial, by id (unfinished ones included).
        episodes: the strategy's per-episode statistics, as stored by the Study.
        elapsed: search seconds the Study recorded (pauses between resumes excluded).
        running_pid: the process working on the run now, None when none is.
        summary: what ``epnas status`` says: the best feasible trial, or the least
            violating one when none is feasible.
        dataset: the data set trained on (None for evaluators without one).
        input_shape, num_classes: what the costs were computed for (None when unknown).
        report_fidelity: the fidelity the run's best is chosen at (EcoNAS, DNA), if any.
    """

    name: str
    path: Path
    config: StudyConfig
    trials: tuple[TrialRecord, ...]
    episodes: tuple[Mapping[str, Any], ...]
    elapsed: float
    running_pid: int | None
    summary: Summary
    dataset: str | None
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    report_fidelity: str | None = None

    @property
    def objective(self) -> Objective:
        return self.config.objective()

    @property
    def scored(self) -> list[TrialRecord]:
        """Finished trials with an accuracy (failures and NaN results left out)."""
        return [t for t in self.trials if t.status in OK and t.accuracy is not None]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    @property
    def in_flight(self) -> int:
        """Trials asked for but not finished (running now, or when the run stopped)."""
        return sum(t.status in ("queued", "running") for t in self.trials)


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory (with :func:`epnas.load_run`) without locking it: a search may
    be writing to it.

    Raises:
        EpnasError: ``run_dir`` holds no study.
    """
    from epnas.runs import load_run

    path = Path(run_dir)
    if not path.is_dir():
        raise EpnasError(f"run directory {path} does not exist")
    loaded = load_run(path)
    with Store(path, readonly=True) as store:  # what only the report needs
        episodes = store.episodes()
        elapsed = float(store.get_meta("elapsed") or 0.0)
        summary = summarize(store, loaded.config)
    try:
        dataset, shape, classes = loaded.dataset, loaded.input_shape, loaded.num_classes
    except EpnasError:  # the data set's files (or the supernet) are elsewhere: no shapes
        dataset, shape, classes = None, None, None
    return Run(path.resolve().name, path, loaded.config, tuple(loaded.trials), tuple(episodes),
               elapsed, holder_pid(path), summary, dataset, shape, classes,
               loaded.report_fidelity)


# --- the numbers behind the plots ------------------------------------------------------


def best_so_far(trials: Sequence[TrialRecord]) -> list[float]:
    """After each trial (in the given order): the best accuracy of a feasible finished
    trial so far, NaN while there is none. Failed and unfinished trials keep the value."""
    best, out = -math.inf, []
    for t in trials:
        if t.status in OK and t.feasible and t.accuracy is not None:
            best = max(best, t.accuracy)
        out.append(best if best > -math.inf else math.nan)
    return out


def progress_by_time(trials: Sequence[TrialRecord]) -> tuple[list[float], list[float]]:
    """(seconds since the first trial started, best feasible accuracy) at each finish.

    Trials finish out of ask order with parallel workers, so they are ordered by end
    time. Time spent between a stop and a resume counts: it is wall-clock time.
    """
    finished = sorted((t for t in trials if t.finished and t.end_time is not None),
                      key=lambda t: (t.end_time, t.id))
    starts = [t.start_time for t in trials if t.start_time is not None]
    if not finished or not starts:
        return [], []
    origin = min(starts)
    return [t.end_time - origin for t in finished], best_so_far(finished)  # type: ignore[operator]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (cost, accuracy) points, by increasing cost.

    A point dominates another when it costs no more and is no less accurate, and is
    strictly better in one of the two. Of identical points the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def feasible_range(objective: Objective, metric: str) -> tuple[float, float] | None:
    """The interval of ``metric`` the constraints allow (``inf`` for an open end), or None
    when no constraint is on ``metric``."""
    bounds = [c for c in objective.constraints if c.metric == metric]
    if not bounds:
        return None
    low = max((c.low for c in bounds if c.low is not None), default=0.0)
    high = min((c.high for c in bounds if c.high is not None), default=math.inf)
    return low, high


def episode_stats(run: Run) -> tuple[str, list[dict[str, float]]]:
    """(x-axis label, rows with ``feasible_share``, ``mean_reward`` and, when the strategy
    has a policy, ``entropy``) per episode.

    Strategies with episodes store their own figures; for the others the trials are
    grouped by the ``episode`` in their info, or else into ten equal windows in ask order.
    """
    if run.episodes:
        rows = [{"x": float(s.get("episode", i)) + 1,
                 **{k: float(s[k]) for k in ("feasible_share", "mean_reward", "entropy")
                    if s.get(k) is not None}}
                for i, s in enumerate(run.episodes)]
        return "episode", rows
    finished = [t for t in run.trials if t.finished]
    if not finished:
        return "episode", []
    groups: dict[float, list[TrialRecord]] = {}
    if all(isinstance(t.info.get("episode"), int) for t in finished):
        label = "episode"
        for t in finished:
            groups.setdefault(float(t.info["episode"]) + 1, []).append(t)
    else:
        size = max(1, math.ceil(len(finished) / 10))
        label = f"trials (windows of {size})"
        for n, t in enumerate(finished):
            groups.setdefault(float((n // size + 1) * size), []).append(t)
    rows = [{"x": x, "feasible_share": sum(bool(t.feasible) for t in ts) / len(ts),
             "mean_reward": sum(t.reward or 0.0 for t in ts) / len(ts)}
            for x, ts in sorted(groups.items())]
    return label, rows


def exit_profile(trial: TrialRecord) -> list[dict[str, float]]:
    """Per exit of a multi-exit trial measured with early exit (the ``supernet``
    evaluator): the ``share`` of inputs leaving there, the exit's ``accuracy`` on every
    input and the ``flops`` an input leaving there pays; empty for other trials."""
    rows = []
    while all(f"exit{len(rows)}_{m}" in trial.metrics for m in ("share", "accuracy", "flops")):
        k = len(rows)
        rows.append({m: float(trial.metrics[f"exit{k}_{m}"])
                     for m in ("share", "accuracy", "flops")})
    return rows


def ranked(run: Run, k: int) -> list[TrialRecord]:
    """The ``k`` best distinct architectures: feasible ones by reward, then the others by
    reward (so a run with no feasible trial still shows its closest candidates); equal
    rewards by validation loss (:attr:`~epnas.store.TrialRecord.rank`). Where the run's
    best is chosen at a ``report_fidelity`` (EcoNAS's top level, DNA's assembled
    network), only trials at it: the others' accuracies measure something else."""
    seen, out = set(), []
    pool = reported(run.trials, run.report_fidelity)
    for t in sorted(pool, key=lambda t: (bool(t.feasible), t.rank), reverse=True):
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
        if len(out) == k:
            break
    return out


@dataclass(frozen=True)
class BlockPart:
    """A part a ``dna`` run rated for one block.

    Attributes:
        trial: its trial (fidelity ``block=K``).
        rating: its distillation rating, lower is better (:func:`epnas.strategies.dna.rating`;
            inf when it failed, None while it is not finished).
        chosen: whether the assembled network took it.
    """

    trial: TrialRecord
    rating: float | None
    chosen: bool


def dna_blocks(run: Run) -> tuple[list[list[BlockPart]], TrialRecord | None]:
    """The parts of a ``dna`` run, one list per block in ask order, and its assembled
    network's trial (None until it is asked); no blocks for other strategies' runs."""
    assembled = [t for t in run.trials if t.info.get("origin") == "assembled"]
    final = assembled[-1] if assembled else None
    chosen = list(final.info.get("parts", ())) if final is not None else []
    blocks: dict[int, list[BlockPart]] = {}
    for t in run.trials:
        k = t.info.get("block")
        if not isinstance(k, int) or not (t.fidelity or "").startswith("block="):
            continue
        took = k < len(chosen) and t.info.get("part") == chosen[k]
        blocks.setdefault(k, []).append(
            BlockPart(t, rating(t.result) if t.finished else None, took))
    return [blocks[k] for k in sorted(blocks)], final
