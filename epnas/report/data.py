"""What the report shows, as plain numbers: read from a run directory, no plotting here.

Every plot in the report is drawn from one of these functions, so the numbers behind it
(best-so-far curves, Pareto fronts, the feasible region of a constraint, per-episode
figures) are tested without looking at pixels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epnas.config import StudyConfig
from epnas.errors import EpnasError
from epnas.objective import Objective
from epnas.store import Store, TrialRecord, holder_pid
from epnas.study import Summary, summarize

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
        input_shape, num_classes: what the costs were computed for (None when unknown).
    """

    name: str
    path: Path
    config: StudyConfig
    trials: tuple[TrialRecord, ...]
    episodes: tuple[Mapping[str, Any], ...]
    elapsed: float
    running_pid: int | None
    summary: Summary
    input_shape: tuple[int, int, int] | None
    num_classes: int | None

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
    """Read a run directory without locking it (a search may be writing to it).

    Raises:
        EpnasError: ``run_dir`` holds no study.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise EpnasError(f"run directory {path} does not exist")
    with Store(path, readonly=True) as store:
        stored = store.get_meta("config")
        if stored is None:
            raise EpnasError(f"{path} holds no study configuration")
        config = StudyConfig.parse(stored)
        trials, episodes = store.trials(), store.episodes()
        elapsed = float(store.get_meta("elapsed") or 0.0)
        summary = summarize(store, config)
    geometry = input_geometry(config)
    return Run(path.resolve().name, path, config, tuple(trials), tuple(episodes), elapsed,
               holder_pid(path), summary, *(geometry or (None, None)))


def input_geometry(config: StudyConfig) -> tuple[tuple[int, int, int], int] | None:
    """(input shape, classes) the run's costs refer to, or None when it cannot be told.

    An evaluator that trains on a data set (it takes ``dataset``) has the data set's shape
    (read from the decoded cache, or decoded once); others take ``input_shape`` and
    ``num_classes`` as options, with their own defaults.
    """
    from epnas.data import load
    from epnas.evaluators import EVALUATORS

    options = dict(config.evaluator_options)
    try:
        _, cls = EVALUATORS.resolve(config.evaluator)  # type: ignore[arg-type]
    except EpnasError:
        return None
    params = inspect.signature(cls).parameters
    if "dataset" in params:
        dataset = options.get("dataset") or config.dataset or params["dataset"].default
        if not isinstance(dataset, str):
            return None
        try:
            data = load(dataset, options.get("data") or config.data)
        except EpnasError:
            return None
        return data.input_shape, data.num_classes

    def option(name: str) -> Any:
        default = params[name].default if name in params else inspect.Parameter.empty
        value = options.get(name, default)
        return None if value is inspect.Parameter.empty else value

    shape, classes = option("input_shape"), option("num_classes")
    if shape is None or classes is None:
        return None
    return (int(shape[0]), int(shape[1]), int(shape[2])), int(classes)


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


def ranked(run: Run, k: int) -> list[TrialRecord]:
    """The ``k`` best distinct architectures: feasible ones by reward, then the others by
    reward (so a run with no feasible trial still shows its closest candidates)."""
    seen, out = set(), []
    for t in sorted(run.scored, key=lambda t: (not t.feasible, -(t.reward or 0.0), t.id)):
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
        if len(out) == k:
            break
    return out
