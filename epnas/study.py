"""The Study: the loop that joins a Strategy, an Evaluator, the Objective, a Store and an
Executor.

One step of the loop:

1. ``strategy.ask_batch(n)`` (at most the trials left in the budget): ``n`` is one per
   worker, times the strategy's ``lookahead`` when there are several workers (so that a
   worker done early takes the next candidate of the batch), 1 inline;
2. a candidate whose ``(key, fidelity)`` already finished ``done`` is answered from the
   store as ``cached`` (it counts as a trial, nothing is evaluated); identical
   candidates within a batch are evaluated once, the others share that result;
3. the rest run on the executor, the largest networks (by FLOPs) first so that no long
   trial starts last; each result is scored with the objective and stored as soon as
   it arrives;
4. the batch is told to the strategy in ask order (so runs are reproducible whatever
   order workers finish in);
5. the batch is closed in one transaction, with the strategy's ``state_dict`` when a
   checkpoint is due: at most every ``CHECKPOINT_INTERVAL`` seconds (a strategy's state
   can take tens of milliseconds to serialise, more than an instant evaluation) and at
   the end of every run. In-memory studies never checkpoint.

The trial budget sizes the batches; ``strategy.done`` ends a run. When the time budget
runs out no other trial starts: the running ones finish and the batch stays open (its
untold trials ``queued``) until more time, in this process or a resumed one, finishes it.
A failed trial never ends it, but more than ``max_consecutive_failures`` failures in a
row stop it with a diagnosis.

**Resume.** A run killed at any instant continues with the same command. The strategy
is restored from its last checkpoint, and every batch after it (closed, or open when
the run stopped) is *replayed* in order: the restored strategy is asked again for a
batch of the recorded size, and its candidates are matched position by position
against the stored trials of that batch. A position whose stored trial has the same ``(key,
fidelity)`` keeps its trial id: if it finished, its stored result is told without
evaluating anything again; if it was queued or running, it is evaluated again. When a
strategy is not deterministic and asks for something else at a position, a stored
unfinished trial there is dropped and a finished one is kept as a trial of the run but
detached from the batch (``position`` NULL; it still answers later repeats as
``cached``). So no finished trial is lost or evaluated twice, and every strategy that
restores its random state in ``load_state_dict`` replays exactly.

**Files.** The run directory's lifecycle (creation, archiving, ``config.yaml``,
``env.json``, ``--init-from``) is :mod:`epnas.rundir`'s; trial directories, the hard
links of cached trials and the weight-sharing dictionary merged before each batch is
closed are :mod:`epnas.trialfiles`'. The loop below decides when.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from epnas import spaces, strategies
from epnas.config import StudyConfig
from epnas.data.custom import as_dataset
from epnas.errors import EpnasError, StorageError, storage_error
from epnas.evaluators import EVALUATORS, Evaluator
from epnas.executors import (
    CUDA_CONTEXT_MEMORY,
    WORKER_MEMORY,
    EvaluatorSpec,
    Executor,
    InlineExecutor,
    Job,
    Outcome,
    ProcessExecutor,
    RayExecutor,
    WorkerLimit,
    available_memory,
    gpu_free_memory,
    gpu_workers,
    limit_workers,
)
from epnas.objective import Objective
from epnas.rundir import (
    EXTENDED_TO,
    open_store,
    save_config,
    seed_genomes,
    write_environment,
)
from epnas.spaces.base import Space
from epnas.spaces.registry import cost, load_genome
from epnas.store import DB_NAME, NewTrial, Store, TrialRecord
from epnas.strategies.base import STRATEGIES, SearchContext, Strategy
from epnas.strategies.filters import EarlyExit, early_exit
from epnas.trial import STORAGE, Candidate, Result, TrialContext
from epnas.trialfiles import CHECKPOINT_WEIGHTS, TrialFiles

logger = logging.getLogger(__name__)

CSV_INTERVAL = 10.0  # seconds between trials.csv exports during a run (always at the end)
CHECKPOINT_INTERVAL = 2.0  # seconds between strategy checkpoints (always at the end)
TYPICAL_GENOMES = 5  # genomes sampled to estimate what a candidate costs before a run starts

Progress = Callable[[TrialRecord], None]
TrialProgress = Callable[[int, int, int, Mapping[str, float]], None]


class StudyFailed(EpnasError):
    """The run stopped because too many trials failed in a row."""


@dataclass(frozen=True)
class Summary:
    """Where a study stands.

    Attributes:
        best: the best feasible trial; when none is feasible, the least-violating one
            (``feasible`` is then False and ``violations`` says by how much).
        stop_reason: why the last ``run`` ended (``trials``, ``time``, ``strategy``,
            ``failures``, ``interrupted``, ``storage``), None while running or when not yet run.
    """

    run_dir: str | None
    counts: Mapping[str, int]
    trials: int
    trial_budget: int | None
    elapsed: float
    time_budget: float | None
    best: TrialRecord | None
    feasible: bool
    violations: Mapping[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    skipped: int = 0  # candidates the filters replaced before evaluation

    @property
    def finished(self) -> int:
        """Trials with a result (done, cached or failed): not those queued or running,
        which a resumed run evaluates again."""
        return sum(self.counts.get(s, 0) for s in ("done", "cached", "failed"))

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "counts": dict(self.counts), "trials": self.trials,
                "trial_budget": self.trial_budget, "elapsed": self.elapsed,
                "time_budget": self.time_budget, "feasible": self.feasible,
                "violations": dict(self.violations), "stop_reason": self.stop_reason,
                "skipped": self.skipped,
                "best": None if self.best is None else self.best.to_dict()}


def reported(trials: Sequence[TrialRecord], fidelity: str | None) -> list[TrialRecord]:
    """The finished trials with an accuracy that a run's best is chosen from: those at
    the strategy's ``report_fidelity`` when it has one and any trial reached it (EcoNAS's
    cheap levels rank candidates but do not report), else all of them."""
    ok = [t for t in trials if t.status in ("done", "cached") and t.accuracy is not None]
    top = [t for t in ok if t.fidelity == fidelity]
    return top if fidelity is not None and top else ok


def summarize(store: Store, config: StudyConfig, stop_reason: str | None = None) -> Summary:
    """The :class:`Summary` of a stored study (also used by ``epnas status``)."""
    objective = config.objective()
    ok = reported(store.trials(("done", "cached")), store.get_meta("report_fidelity"))
    feasible = [t for t in ok if t.feasible]
    best: TrialRecord | None = None
    violations: dict[str, float] = {}
    if feasible:
        best = max(feasible, key=lambda t: t.rank)
    elif ok:
        best = min(ok, key=lambda t: (sum(objective.violations(t.metrics).values()),
                                      tuple(-x for x in t.rank)))
        violations = {k: v for k, v in objective.violations(best.metrics).items() if v > 0}
    return Summary(str(store.run_dir) if store.run_dir else None, store.counts(),
                   store.count(), config.trials, float(store.get_meta("elapsed") or 0.0),
                   config.time, best, bool(feasible), violations, stop_reason,
                   int(store.get_meta("skipped") or 0))


PROBE_NETWORKS = 3  # sampled networks whose training steps decide bf16 on a CPU
PROBE_BATCH = 32  # their example batch


def _decided_precision(config: StudyConfig, force_new: bool, dataset: Any = None
                       ) -> StudyConfig:
    """``config`` with its precision decided for the run, before any worker starts: the
    one its run directory recorded, else ``auto`` decided now (an evaluator that does not
    train keeps ``auto``). A precision in the evaluator's ``schedule`` option counts as
    given."""
    if not EvaluatorSpec(config.evaluator).trains():
        return config
    given = (config.evaluator_options.get("schedule") or {}).get("precision")
    if given is not None and config.precision == "auto":
        config = StudyConfig.parse({**config.model_dump(), "precision": given})
    previous = None
    if config.out is not None and not force_new and (Path(config.out) / DB_NAME).is_file():
        with contextlib.suppress(EpnasError, sqlite3.Error):
            with Store(config.out, readonly=True) as store:
                stored = store.get_meta("config")
            previous = None if stored is None else StudyConfig.parse(stored)
    device = config.evaluator_options.get("device")
    return config.decide_precision(previous, None if device is None else str(device),
                                   _searched_speedup(config, dataset))


def _searched_speedup(config: StudyConfig, dataset: Any) -> Callable[[], float | None]:
    """What decides bf16 on a CPU besides a plain convolution: the bf16 speedup of
    :data:`PROBE_NETWORKS` networks sampled from the run's space, built for its data, each
    timed on a random batch of :data:`PROBE_BATCH` (None where the evaluator does not
    train on a data set it loads, or where the space or data cannot be made: the
    evaluator reports that when it starts)."""

    def measure() -> float | None:
        import torch

        from epnas.train.trainer import networks_bf16_speedup

        try:
            resolved = with_evaluator_space(config)
            space = spaces.get(resolved.space, **resolved.space_options)  # type: ignore[arg-type]
            data = getattr(evaluator_spec(config, dataset).create(), "loaded", None)
        except EpnasError:
            return None
        if data is None:
            return None
        shape, classes = data.input_shape, max(data.num_classes, 1)
        key = json.dumps({"space": space.name, "options": space.options.model_dump(mode="json"),
                          "input": shape, "classes": classes, "networks": PROBE_NETWORKS,
                          "batch": PROBE_BATCH}, sort_keys=True)

        def networks() -> list[tuple[Any, Any]]:
            rng = np.random.default_rng(0)
            layout = torch.channels_last
            return [(spaces.build(space.sample(rng), shape, classes).to(memory_format=layout),
                     torch.randn(PROBE_BATCH, *shape).contiguous(memory_format=layout))
                    for _ in range(PROBE_NETWORKS)]

        return networks_bf16_speedup(key, networks)

    return measure


@dataclass
class _Slot:
    """One position of a batch: its trial and, once known, its scored result."""

    candidate: Candidate
    trial_id: int = 0
    result: Result | None = None
    evaluate: bool = False
    copies: list[int] = field(default_factory=list)  # positions waiting on this result


class Study:
    """A neural architecture search: ``Study(...).run()``, then ``best()``.

    Args:
        space, strategy, evaluator: registered names (or ``package.module:Class``) or
            instances. An evaluator instance runs inline only; give its name and
            options to evaluate in worker processes. No space: the evaluator's own
            with its options where it has one (a supernet's, :meth:`Evaluator.rated_space`) and
            no ``space_options`` are given, else ``layerwise``.
        executor: an :class:`~epnas.executors.Executor` to use instead of the one
            ``workers`` and ``trial_timeout`` select.
        progress: called with every trial as it is recorded. Set ``trial_progress``
            to hear ``(trial id, epoch, epochs, figures)`` while a trial trains (inline
            and local worker processes; Ray workers do not report).
        force_new: start a new run in ``out`` even if it holds one (the old files move
            to ``out/replaced-<time>/``).
        **settings: the other :class:`~epnas.config.StudyConfig` fields (``dataset``: a
            name, or the user's own data as ``(images, labels)``, a torch ``Dataset`` or an
            :class:`~epnas.data.Dataset`, recorded by its name; ``constraints``,
            ``trials``, ``time``, ``workers``, ``seed``, ``out`` (None: in memory, no
            files), ...). Local ``workers`` are capped by the available cores, the trial
            budget and the available memory (:func:`~epnas.executors.limit_workers`);
            ``config.workers`` is then what is used, and ``worker_limit`` says why.

    Raises:
        EpnasError: bad settings, or ``out`` holds a run with another configuration
            (only the budget and executor settings may change on resume), is locked
            by another process, or cannot be written. Nothing in ``out`` is changed.
    """

    def __init__(self, *, space: Space | str | None = None, strategy: Strategy | str | None = None,
                 evaluator: Evaluator | str | None = None, executor: Executor | None = None,
                 progress: Progress | None = None, force_new: bool = False,
                 **settings: Any) -> None:
        for kind, given in (("space", space), ("strategy", strategy), ("evaluator", evaluator)):
            if not isinstance(given, str | None) and settings.get(f"{kind}_options"):
                raise EpnasError(f"{kind}_options apply when {kind} is given by name, "
                                 "not as an instance")
        if isinstance(strategy, Strategy) and settings.get("preset"):
            raise EpnasError("a preset applies when the strategy is given by name")
        if isinstance(strategy, Strategy):  # record what an instance is, for resume checks
            space = strategy.space
            settings["strategy_options"] = strategy.options.model_dump(mode="json")
            settings.setdefault("seed", strategy.seed)
        if isinstance(space, Space):
            settings["space_options"] = space.options.model_dump(mode="json")
        dataset = settings.get("dataset")
        if not isinstance(dataset, str | None):  # the user's own data: recorded by name
            dataset = as_dataset(dataset)
            settings["dataset"] = dataset.name
        config = StudyConfig.parse({"space": _name(space), "strategy": _name(strategy),
                                    "evaluator": _name(evaluator), **settings})
        config = recorded_paths(config.resolved(),
                                evaluator if isinstance(evaluator, Evaluator) else None)
        self._start(config, space, strategy, evaluator, dataset, executor, progress, force_new)

    @classmethod
    def from_config(cls, config: StudyConfig, *, executor: Executor | None = None,
                    progress: Progress | None = None, force_new: bool = False,
                    extend: bool = False) -> Study:
        """A study of ``config`` as it is: the settings are not validated again.

        ``extend``: resuming with a trial budget given again (``epnas resume RUN --trials
        N``), a strategy whose own schedule is over or ends earlier is extended to it
        (:meth:`Strategy.extend`), as :meth:`optimize` does with ``trials``.
        """
        study = cls.__new__(cls)
        config = config.resolved()
        study._start(config, config.space, config.strategy, config.evaluator, config.dataset,
                     executor, progress, force_new, extend)
        return study

    def _start(self, config: StudyConfig, space: Space | str | None,
               strategy: Strategy | str | None, evaluator: Evaluator | str | None,
               dataset: Any, executor: Executor | None, progress: Progress | None,
               force_new: bool, extend: bool = False) -> None:
        """Start the evaluator's workers and set up everything else (:meth:`_setup`)."""
        self.spec: EvaluatorSpec | None = None
        if not isinstance(evaluator, Evaluator):
            config = _decided_precision(config, force_new, dataset)
            self.spec = evaluator_spec(config, dataset)
        self.config = config
        # Local workers: at most one per core and per trial of the budget, and as many as
        # the memory holds (refined by the training memory of typical candidates once the
        # space and evaluator exist); ``config.workers`` becomes what is used.
        self.worker_limit: WorkerLimit | None = None
        if executor is None and self.spec is not None and config.ray is None and \
                config.workers_per_gpu is not None:  # auto: one per core, until _fit_gpus
            per_gpu = gpu_workers(config.workers_per_gpu, free=[])
            if per_gpu.workers:
                config = self.config = config.model_copy(update={"workers": per_gpu.workers})
        if executor is None and self.spec is not None and config.ray is None and \
                config.workers > 1:
            self.worker_limit = limit_workers(config.workers, trials=config.trials)
            config = self.config = config.model_copy(
                update={"workers": self.worker_limit.workers})
        self._executor = executor
        if executor is None and self.spec is not None and config.ray is None and (
                config.workers > 1 or config.trial_timeout):
            # The first worker starts now (the forkserver importing torch, the worker
            # creating its evaluator) while this process builds the strategy and its
            # evaluator, so the first trial starts at once; the others start when the
            # dispatch has a job for them (a fork of the warm server: tens of ms).
            self._executor = ProcessExecutor(self.spec, config.workers,
                                             timeout=config.trial_timeout,
                                             elastic=config.elastic_threads)
            self._executor.start(1)
        try:
            self._setup(space, strategy, evaluator, progress, force_new, extend)
        except BaseException:
            if self._executor is not None and executor is None:
                self._executor.close()
            raise

    def _setup(self, space: Space | str | None, strategy: Strategy | str | None,
               evaluator: Evaluator | str | None, progress: Progress | None,
               force_new: bool, extend: bool) -> None:
        if isinstance(evaluator, Evaluator):
            self.evaluator = evaluator
        else:
            assert self.spec is not None
            self.evaluator = self.spec.create()
        config = self.config = with_evaluator_space(self.config, self.evaluator)
        self.space = space if isinstance(space, Space) else \
            spaces.get(config.space, **config.space_options)  # type: ignore[arg-type]
        self.strategy = strategy if isinstance(strategy, Strategy) else strategies.get(
            config.strategy, space=self.space, seed=config.seed, **strategy_options(config))
        self.evaluator.prepare()  # bad data ends the run here, before anything is written
        self.evaluator.check_space(self.space)
        if self._executor is None and self.spec is None and (
                config.workers > 1 or config.ray or config.trial_timeout):
            raise EpnasError("an Evaluator instance runs inline only: give the evaluator by "
                             "name (or package.module:Class) and options to use workers, Ray "
                             "or a trial timeout")
        self._limit_by_memory()
        config = self.config
        self._memory = self._trial_memory_budget()
        # Nothing is written before every setting is known to work: a refusal leaves no
        # run directory behind (and a corrected command needs no --force-new).
        self.fidelity = config.fidelity or self.evaluator.default_fidelity
        if self.fidelity is not None:  # a bad spec (or one the data cannot train) fails here
            self.evaluator.check_fidelity(self.fidelity)
        for fidelity in self.strategy.fidelities:
            try:
                self.evaluator.check_fidelity(fidelity)
            except EpnasError as exc:
                raise EpnasError(f"strategy {config.strategy!r} asks for fidelity "
                                 f"{fidelity!r}: {exc}; choose the fidelities it asks for "
                                 "with its options (--strategy-opt)") from None
        self._check_metrics(config.objective())
        # EEEA early exit: rejected candidates never reach the evaluator or the store
        self.strategy = early_exit(self.strategy, self.evaluator.costs, config.filters)
        self.objective: Objective = config.objective()
        self.strategy.attach(SearchContext(
            trials=config.trials, workers=config.workers if config.ray is None else 1,
            objective=self.objective, costs=self.evaluator.costs, evaluator=self.evaluator))
        self.progress = progress
        # called with (trial id, epoch, epochs, figures) as a running trial ends an epoch
        self.trial_progress: TrialProgress | None = None
        self.stop_reason: str | None = None
        seeds = seed_genomes(config, force_new)
        if seeds is not None:  # refused seeds must leave RUN_DIR unchanged: check them first
            self._start_from(seeds, config.init_from)
        self.store = open_store(config, force_new)
        if extend and config.trials is not None:
            self.store.set_meta({EXTENDED_TO: config.trials})
        self._extend()
        if self._executor is not None and self.run_dir is not None:
            write_environment(self.run_dir, config, self._executor)
        if config.init_from is not None:
            if seeds is None:  # a resumed run starts from the seeds it recorded
                self._start_from(self.store.get_meta("init_genomes"), config.init_from)
            else:
                self.store.set_meta({"init_genomes": seeds})
        if self.strategy.report_fidelity is not None:
            self.store.set_meta({"report_fidelity": self.strategy.report_fidelity})
        self._count = self.store.count()
        # (key, fidelity) -> (trial id, result) of every trial that finished `done`
        self._cache = {(t.key, t.fidelity): (t.id, t.result) for t in self.store.trials("done")}
        self._restored = False
        # stored batches still to replay after a restore, and the batch asked but not yet
        # complete (a budget or Ctrl-C stopped it; the next ``run`` finishes it first)
        self._replay: deque[tuple[int, int, list[TrialRecord]]] = deque()
        self._open: tuple[int, int, list[_Slot]] | None = None
        self._streak: list[Result] = []  # the failures since the last success, in tell order
        self._session: float | None = None
        self._elapsed_before = 0.0
        self._last_checkpoint = 0.0
        self._unsaved: int | None = None  # closed batch whose strategy state is not saved
        self._files = TrialFiles(self.store.run_dir, self.evaluator.shares_weights)

    def _typical_genomes(self, n: int = TYPICAL_GENOMES) -> list[Any]:
        """``n`` genomes sampled from the space (seeded by the study), to learn what a
        candidate of this study measures and costs before the first trial."""
        rng = np.random.default_rng(self.config.seed)
        return [self.space.sample(rng) for _ in range(n)]

    def _check_metrics(self, objective: Objective) -> None:
        """Refuse a constraint on a metric the evaluator's results will not carry.

        A result carries the evaluator's :meth:`~epnas.evaluators.Evaluator.costs` and the
        metrics it declares (``Evaluator.metrics``); the costs are those of a genome
        sampled from the space. An evaluator whose costs fail there (a space without a
        cost model) is not judged: its results are.
        """
        wanted = {c.metric for c in objective.constraints} | {objective.metric}
        if wanted <= set(self.evaluator.metrics):
            return
        try:
            known = set(self.evaluator.costs(self._typical_genomes(1)[0]))
        except Exception:
            return
        known |= set(self.evaluator.metrics)
        for metric in sorted(wanted - known):
            hint = ("; it measures latency with the option latency=true (--evaluator-opt "
                    "latency=true)" if metric == "latency" and
                    self.config.evaluator == "training" else "")
            raise EpnasError(f"constraint on {metric!r}: the {self.config.evaluator} "
                             f"evaluator does not report it; its metrics: "
                             f"{', '.join(sorted(known))}{hint}")

    def _trial_memory_budget(self) -> float | None:
        """Bytes this machine's trials may take together, measured once per session: a
        candidate estimated above it is refused (``memory``), one that fits only alone
        waits for the running ones (None: not checked, Ray's machines are elsewhere)."""
        memory = available_memory()
        if memory is None or self.config.ray is not None:
            return None
        others = self.config.workers - 1 if self.spec is not None else 0  # started lazily
        budget = max(0.0, memory - others * WORKER_MEMORY)
        if isinstance(self._executor, ProcessExecutor):
            self._executor.memory = budget
        return budget

    def _limit_by_memory(self) -> None:
        """Fewer local workers when the memory does not hold one typical trial each."""
        if self.worker_limit is None or self.spec is None:
            return
        try:
            memory = float(np.median([self.evaluator.trial_memory(g)
                                      for g in self._typical_genomes()]))
        except Exception:  # a user's space without a cost model: the per-worker overhead only
            return
        limit = limit_workers(self.worker_limit.requested, trials=self.config.trials,
                              trial_memory=memory)
        limit = self._fit_gpus(limit)
        if limit.workers >= self.config.workers:
            return
        self.worker_limit = limit
        self.config = self.config.model_copy(update={"workers": limit.workers})
        pool = self._executor
        assert isinstance(pool, ProcessExecutor)
        if limit.workers == 1 and not self.config.trial_timeout:
            pool.close()  # one worker: inline, as --workers 1 runs
            self._executor = None
        else:
            pool.limit(limit.workers)

    def _fit_gpus(self, limit: WorkerLimit) -> WorkerLimit:
        """With ``workers_per_gpu``: the workers its GPUs' free memory holds (auto), and
        the GPU memory the pool lets the trials on one GPU take together."""
        pool = self._executor
        if self.config.workers_per_gpu is None or not isinstance(pool, ProcessExecutor) or \
                not any(pool.devices):
            return limit
        try:
            largest = max(self.evaluator.trial_memory(g) for g in self._typical_genomes())
        except Exception:  # a user's space without a cost model: the CUDA contexts only
            largest = 0.0
        free = gpu_free_memory()
        fit = gpu_workers(self.config.workers_per_gpu, trial_memory=largest, free=free)
        if fit.workers < limit.workers:
            limit = WorkerLimit(fit.workers, limit.requested, fit.reason)
        if free:
            per_gpu = -(-limit.workers // len(set(pool.devices)))
            pool.gpu_memory = max(0.0, min(free) - per_gpu * CUDA_CONTEXT_MEMORY)
        return limit

    # --- public API ------------------------------------------------------------------------

    def trial_budget(self) -> tuple[int | None, str | None]:
        """The trials this run will use at most, and why when that is fewer than its
        trial budget (the strategy's own schedule ends first); None: no trial limit."""
        planned = self.strategy.planned_trials()
        budget = self.config.trials
        if planned is None or (budget is not None and planned[0] >= budget):
            return budget, None
        ends = f"ends before the budget of {budget}" if budget is not None else "ends the run"
        return planned[0], (f"the {self.config.strategy} strategy's own schedule, "
                            f"{planned[1]}, {ends}")

    @property
    def run_dir(self) -> Path | None:
        return self.store.run_dir

    @property
    def _db_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / DB_NAME

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            c = self.config
            if c.ray is not None:
                assert self.spec is not None
                self._executor = RayExecutor(self.spec, c.workers if c.workers > 1 else None,
                                             address=c.ray, timeout=c.trial_timeout)
            else:  # local worker processes were started with the study
                self._executor = InlineExecutor(self.evaluator)
            if self.run_dir is not None:
                write_environment(self.run_dir, c, self._executor)
        return self._executor

    def run(self) -> Summary:
        """Search until a budget is spent or the strategy is done; the summary.

        Raises:
            StudyFailed: more than ``max_consecutive_failures`` trials failed in a row
                (the store is consistent; fix the cause and run again to continue).
            KeyboardInterrupt: on Ctrl-C (or SIGTERM, where the CLI maps it): running
                trials are put back to ``queued`` first.
        """
        self._session = time.monotonic()
        self._elapsed_before = float(self.store.get_meta("elapsed") or 0.0)
        self.stop_reason = None
        try:
            if not self._restored:
                self._restore()
            self._catch_up()
            while self._open is None and (size := self._next_size()) > 0:
                self._unsaved = None  # from here the strategy is not between batches
                candidates = self.strategy.ask_batch(size)
                if not candidates:
                    if self.strategy.done:
                        self.stop_reason = "strategy"
                        break
                    raise EpnasError(f"strategy {self.config.strategy!r} asked for nothing "
                                     "although every result was told and it is not done")
                self._run_batch(self.store.next_batch(), size, candidates, [])
        except KeyboardInterrupt:
            self.store.requeue_running()
            self.stop_reason = "interrupted"
            raise
        except (OSError, sqlite3.Error, StorageError) as exc:
            error = storage_error(exc, self._db_path)
            if error is None:
                raise
            self.stop_reason = "storage"
            # best effort: a store that cannot be written keeps them ``running``, which
            # a resume runs again all the same
            with contextlib.suppress(OSError, sqlite3.Error):
                self.store.requeue_running()
            raise StorageError(f"{error}; the search stopped, its unfinished trials are "
                               f"queued: free space or fix the permissions, then run "
                               f"epnas resume {self.run_dir}") from None
        finally:
            # after a storage error these writes may fail too: they must not hide it
            with contextlib.suppress(*(() if self.stop_reason != "storage"
                                       else (OSError, sqlite3.Error))):
                # what `epnas status` tells of the budget left, without the strategy
                self.store.set_meta({"elapsed": self.elapsed,
                                     "trial_budget": self.trial_budget()[0],
                                     "strategy_done": self.strategy.done,
                                     "strategy_extensible": self.strategy.extensible})
                self.store.export_csv()
                if self._unsaved is not None:
                    self._checkpoint(self._unsaved)
        if (warning := self.early_stop_warning()) is not None:
            logger.warning(warning)
        return self.summary()

    def optimize(self, trials: int | None = None, time: float | str | None = None) -> Summary:
        """Run with these budgets (None: the configured ones); the notebook spelling of
        ``epnas search`` / ``epnas resume --trials N --time T``.

        The budgets count every trial and all wall time of the run, so calling it again
        with a larger ``trials`` continues where the last call stopped.
        """
        budgets = {k: v for k, v in (("trials", trials), ("time", time)) if v is not None}
        if budgets:
            self.config = StudyConfig.parse({**self.config.model_dump(), **budgets})
            save_config(self.store, self.config,
                        {EXTENDED_TO: trials} if trials is not None else {})
            self._extend()
        return self.run()

    def _extend(self) -> None:
        """Extend the strategy's own schedule to the budget a resume raised it to."""
        trials = self.store.get_meta(EXTENDED_TO)
        if trials is not None:
            self.strategy.extend(trials)

    def early_stop_warning(self) -> str | None:
        """Why the run ended before its trial budget, when the strategy's own schedule
        ended it (None otherwise)."""
        budget = self.config.trials
        if self.stop_reason != "strategy" or budget is None or self._count >= budget:
            return None
        longer = ("resume with --trials N to extend it" if self.strategy.extensible
                  else "give it a longer schedule (its options) to use the whole budget")
        return (f"the {self.config.strategy} strategy's own schedule ended after "
                f"{self._count} of the {budget} trials asked for; {longer}")

    def best(self) -> TrialRecord | None:
        """The best feasible trial; when none is feasible, the least-violating one."""
        return self.summary().best

    def trials(self) -> list[TrialRecord]:
        """Every trial, by id."""
        return self.store.trials()

    def summary(self) -> Summary:
        return summarize(self.store, self.config, self.stop_reason)

    @property
    def elapsed(self) -> float:
        """Seconds searched in this run directory, over every session."""
        if self._session is None:
            return float(self.store.get_meta("elapsed") or 0.0)
        return self._elapsed_before + time.monotonic() - self._session

    def close(self) -> None:
        """Stop the workers, export ``trials.csv`` and release the run directory."""
        if self._executor is not None:
            self._executor.close()
        self.store.close(export=self.stop_reason != "storage")
        self._files.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------------

    def _start_from(self, seeds: Sequence[str], source: str | None) -> None:
        try:
            self.strategy.start_from([load_genome(g) for g in seeds])
        except EpnasError as exc:  # a genome or space mismatch
            raise EpnasError(f"--init-from {source}: {exc}") from None

    def _next_size(self) -> int:
        if self.strategy.done:
            self.stop_reason = "strategy"
            return 0
        workers = self.executor.workers
        left = workers * self.strategy.lookahead if workers > 1 else 1
        if self.config.trials is not None:
            left = min(left, self.config.trials - self._count)
            if left <= 0:
                self.stop_reason = "trials"
                return 0
        if self._out_of_time():
            self.stop_reason = "time"
            return 0
        return left

    def _out_of_time(self) -> bool:
        return self.config.time is not None and self.elapsed >= self.config.time

    def _restore(self) -> None:
        """Continue from the checkpoint and replay the batches after it (module docs)."""
        self._restored = True
        self._last_checkpoint = time.monotonic()
        after = -1
        checkpoint = self.store.checkpoint()
        if checkpoint is not None:
            after, state = checkpoint
            self.strategy.load_state_dict(state)
            self._extend()  # its checkpoint may predate an extension
        self._files.restore(None if checkpoint is None
                            else self.store.get_meta(CHECKPOINT_WEIGHTS))
        self._replay = deque(self.store.batches_after(after))

    def _catch_up(self) -> None:
        """Finish the open batch, then replay the stored ones (until the time runs out:
        the rest waits for the next ``run``)."""
        if self._open is not None:
            batch, size, slots = self._open
            todo = {s.trial_id: "running" for s in slots if s.evaluate and s.result is None}
            self.store.open_batch(batch, size, [], reset=todo)
            self._finish_batch(batch, slots)
        while self._open is None and self._replay:
            batch, size, stored = self._replay.popleft()
            self._run_batch(batch, size, self.strategy.ask_batch(size), stored)

    def _checkpoint(self, batch: int) -> None:
        self.store.save_checkpoint(batch, self.strategy.state_dict(),
                                   self._files.checkpoint_meta())
        self._checkpointed()
        self._unsaved = None

    def _checkpointed(self) -> None:
        self._last_checkpoint = time.monotonic()
        self._files.checkpointed()

    def _run_batch(self, batch: int, size: int, candidates: Sequence[Candidate],
                   stored: Sequence[TrialRecord]) -> None:
        """Plan, evaluate, tell and close one batch (``stored``: its trials, on replay)."""
        slots = [_Slot(self._with_fidelity(c)) for c in candidates]
        self._plan(batch, size, slots, stored)
        self._open = (batch, size, slots)
        self._finish_batch(batch, slots)

    def _finish_batch(self, batch: int, slots: list[_Slot]) -> None:
        """Evaluate what is left of an open batch, then tell and close it."""
        self._evaluate(slots)
        if any(slot.result is None for slot in slots):
            # The time ran out mid-batch: the trials never started are queued again and
            # the batch stays open and untold; more time (or a resume) finishes it.
            self.store.requeue_running()
            self.stop_reason = "time"
            return
        self._open = None
        for slot in slots:
            assert slot.result is not None
            self.strategy.tell(slot.candidate, slot.result)
            if slot.result.ok:
                self._streak = []
            else:
                self._streak.append(slot.result)
        self._files.merge(batch, self.evaluator,
                          [(s.trial_id, s.candidate, s.result) for s in slots])
        due = (self.store.run_dir is not None
               and time.monotonic() - self._last_checkpoint >= CHECKPOINT_INTERVAL)
        meta: dict[str, Any] = {"elapsed": self.elapsed,
                                **(self._files.checkpoint_meta() if due else {})}
        if isinstance(self.strategy, EarlyExit):
            meta["skipped"] = self.strategy.skipped
        self.store.close_batch(batch, self.strategy.state_dict() if due else None,
                               self.strategy.stats(), meta)
        if due:
            self._checkpointed()
        else:
            self._files.prune()
        self._unsaved = None if due or self.store.run_dir is None else batch
        self.store.export_csv(CSV_INTERVAL)
        limit = self.config.max_consecutive_failures
        if len(self._streak) > limit:
            self.stop_reason = "failures"
            raise StudyFailed(_diagnose(self._streak, limit))

    def _plan(self, batch: int, size: int, slots: list[_Slot],
              stored: Sequence[TrialRecord]) -> None:
        """Give every slot its trial and decide how it is answered; store that at once.

        A slot is answered by its stored finished trial (replay), from the cache of
        finished results (``cached``), by an identical slot of the batch, or evaluated.
        """
        old = {t.position: t for t in stored}
        new: list[NewTrial] = []
        reset: dict[int, str] = {}
        drop: list[int] = []
        detach: list[int] = []
        cached: list[tuple[_Slot, int]] = []  # stored unfinished rows now cached, source
        first: dict[tuple[str, str | None], _Slot] = {}
        for i, slot in enumerate(slots):
            c = slot.candidate
            ident = (c.key, c.fidelity)
            row = old.pop(i, None)
            if row is not None and (row.key, row.fidelity) == ident:
                slot.trial_id = row.id
                if row.finished:
                    slot.result = row.result
                    if row.source is not None:  # in case the run stopped before linking
                        self._files.link(row.id, row.source)
                    continue
            elif row is not None:
                (detach if row.finished else drop).append(row.id)
            if ident in self._cache:
                source, result = self._cache[ident]
                slot.result = self.objective.score(replace(result, status="cached"))
                if slot.trial_id:
                    cached.append((slot, source))
                else:
                    new.append(NewTrial(i, c, "cached", slot.result, source))
                continue
            if ident in first:
                first[ident].copies.append(i)
                status = "queued"
            else:
                slot.evaluate = True
                first[ident] = slot
                status = "running"
            if slot.trial_id:
                reset[slot.trial_id] = status
            else:
                new.append(NewTrial(i, c, status))
        for row in old.values():  # a replayed batch came back shorter
            (detach if row.finished else drop).append(row.id)

        ids = self.store.open_batch(batch, size, new, reset=reset, drop=drop, detach=detach)
        self._count += len(new) - len(drop)
        for item, trial_id in zip(new, ids):
            slots[item.position].trial_id = trial_id
        for slot, source in cached:
            assert slot.result is not None
            self.store.finish(slot.trial_id, slot.result, source=source)
        for item, trial_id in zip(new, ids):
            if item.source is not None:
                self._files.link(trial_id, item.source)
        for slot, source in cached:
            self._files.link(slot.trial_id, source)
        for slot in [slots[item.position] for item in new if item.status == "cached"] + \
                [slot for slot, _ in cached]:
            self._report(slot.trial_id)

    def _evaluate(self, slots: list[_Slot]) -> None:
        """Run the slots to evaluate; store each result (and its copies) as it arrives."""
        todo = [s for s in slots if s.evaluate and s.result is None]
        by_id = {s.trial_id: s for s in todo}
        jobs = [Job(s.trial_id, s.candidate, self._context(s.trial_id),
                    self._needs(s.candidate)) for s in todo]
        for job in [j for j in jobs if self._memory is not None and j.memory > self._memory]:
            jobs.remove(job)  # it would take the machine down: never started
            now = time.time()
            self._record(by_id[job.trial_id], slots, Outcome(job.trial_id, Result.failure(
                "memory", f"estimated training memory {job.memory / 1e9:.2f} GB is more than "
                          f"the {self._memory / 1e9:.2f} GB of memory available to trials; "
                          "not trained (--max-memory keeps such candidates out)"),
                "study", now, now))
        if len(jobs) > self.executor.workers > 1:
            # Longest first: a batch ends when its last trial does, so a long trial started
            # last keeps one worker busy while the others wait. Results are still told in
            # ask order, so the order of dispatch changes no result.
            jobs.sort(key=self._expected_work, reverse=True)
        # asked only with a time budget (an executor written before ``stop`` still runs)
        stop = {"stop": self._out_of_time} if self.config.time is not None else {}
        for outcome in self.executor.run(jobs, **stop):
            if outcome.result.reason == STORAGE:  # its trial stays unfinished
                raise StorageError(outcome.result.error)
            self._record(by_id[outcome.trial_id], slots, outcome)

    def _context(self, trial_id: int) -> TrialContext:
        """A trial's files, and :attr:`trial_progress` to hear how far it is."""
        context = self._files.context(trial_id)
        if self.trial_progress is None:
            return context
        return replace(context, progress=functools.partial(self.trial_progress, trial_id))

    def _needs(self, candidate: Candidate) -> float:
        """The bytes evaluating ``candidate`` takes beyond its worker (0: unknown)."""
        try:
            return float(self.evaluator.trial_memory(candidate.genome))
        except Exception:  # a user's space without a cost model
            return 0.0

    def _record(self, slot: _Slot, slots: list[_Slot], outcome: Outcome) -> None:
        """Store the outcome of ``slot``'s evaluation, and of its copies in the batch."""
        result = slot.result = self._score(outcome.result)
        # the last death of a trial failed worker-lost was not followed by a retry
        retries = len(outcome.lost) - (result.reason == "worker-lost")
        self.store.finish(slot.trial_id, result, worker=outcome.worker,
                          start=outcome.start, end=outcome.end, retries=max(0, retries),
                          lost="; ".join(outcome.lost) or None)
        if result.status == "done":
            self._cache[(slot.candidate.key, slot.candidate.fidelity)] = (slot.trial_id,
                                                                          result)
        self._report(slot.trial_id)
        for position in slot.copies:
            copy = slots[position]
            copy.result = replace(result, status="cached") if result.ok else result
            self.store.finish(copy.trial_id, copy.result, source=slot.trial_id,
                              worker=outcome.worker)
            if copy.result.ok:
                self._files.link(copy.trial_id, slot.trial_id)
            self._report(copy.trial_id)

    def _expected_work(self, job: Job) -> float:
        """A job's forward FLOPs by the cost model: what orders a batch's dispatch."""
        try:
            return float(cost(job.candidate.genome, self.evaluator.input_shape,
                                    self.evaluator.num_classes).flops)
        except Exception:  # a user's space without a cost model: keep the ask order
            return 0.0

    def _with_fidelity(self, candidate: Candidate) -> Candidate:
        if candidate.fidelity is None and self.fidelity is not None:
            return replace(candidate, fidelity=self.fidelity)
        return candidate

    def _score(self, result: Result) -> Result:
        """The objective's score; a ``done`` result without a finite accuracy is a failure."""
        if result.ok:
            accuracy = result.metrics.get(self.objective.metric)
            if accuracy is None:
                result = Result.failure("error", f"the evaluator reported no "
                                                 f"{self.objective.metric!r}", result.metrics)
            elif not math.isfinite(float(accuracy)):
                result = Result.failure("diverged", f"{self.objective.metric} is {accuracy}",
                                        result.metrics)
        return self.objective.score(result)

    def _report(self, trial_id: int) -> None:
        if self.progress is not None:
            self.progress(self.store.trials_by_id([trial_id])[0])


def evaluator_spec(config: StudyConfig, dataset: Any = None) -> EvaluatorSpec:
    """How to create ``config``'s evaluator, with the study settings it may take
    (``dataset``: the user's own data, else ``config.dataset``)."""
    constraints = [str(c) for c in config.objective().constraints]
    return EvaluatorSpec(config.evaluator, config.evaluator_options,  # type: ignore[arg-type]
                         {"dataset": dataset or config.dataset, "data": config.data,
                          "seed": config.seed, "max_memory": config.max_memory,
                          "precision": config.precision, "constraints": constraints or None})


def with_evaluator_space(config: StudyConfig, evaluator: Evaluator | None = None
                         ) -> StudyConfig:
    """``config`` with its space decided: the evaluator's own with its options
    (:meth:`Evaluator.rated_space`, of ``evaluator`` or the one ``config`` names) where
    ``config`` gives no space options and names no space or that one; else ``layerwise``
    where it names no space. Options given are kept: :meth:`Evaluator.check_space`
    judges them."""
    if evaluator is None:
        _, cls = EVALUATORS.resolve(config.evaluator)  # type: ignore[arg-type]
        if cls.rated_space is not Evaluator.rated_space:  # make only one with its own space
            evaluator = evaluator_spec(config).create()
    own = None if evaluator is None else evaluator.rated_space()
    if own is not None and not config.space_options and config.space in (None, own[0]):
        return config.model_copy(update={"space": own[0], "space_options": own[1]})
    return config if config.space is not None else config.model_copy(
        update={"space": "layerwise"})


def recorded_paths(config: StudyConfig, evaluator: Evaluator | None = None) -> StudyConfig:
    """``config`` with the paths its evaluator (``evaluator``, else the one it names) reads
    (``data`` and the evaluator's :attr:`~epnas.evaluators.Evaluator.path_options`) made
    absolute where they exist, as a new run records them: resumed from another
    directory, it reads the same files."""
    cls = type(evaluator) if evaluator is not None else \
        EVALUATORS.resolve(config.evaluator)[1]  # type: ignore[arg-type]
    options = {k: _absolute(v) if k in cls.path_options else v
               for k, v in config.evaluator_options.items()}
    return config.model_copy(update={"data": _absolute(config.data),
                                     "evaluator_options": options})


def _absolute(value: Any) -> Any:
    """A path given as a string, absolute when it names an existing file or directory."""
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).absolute())
    return value


def strategy_options(config: StudyConfig) -> dict[str, Any]:
    """The strategy's options: its ``preset`` (if any) updated by ``strategy_options``."""
    if config.preset is None:
        return dict(config.strategy_options)
    _, cls = STRATEGIES.resolve(config.strategy)  # type: ignore[arg-type]
    if config.preset not in cls.presets:
        raise EpnasError(f"strategy {config.strategy!r} has no preset {config.preset!r}; its "
                         f"presets: {', '.join(cls.presets) or 'none'}")
    return {**cls.presets[config.preset], **config.strategy_options}


def _name(component: Any) -> str | None:
    """The registry spec of a component given by name or as an instance."""
    if component is None or isinstance(component, str):
        return component
    if isinstance(component, Space | Strategy) and component.name:
        return component.name
    cls = type(component)
    if isinstance(component, Evaluator):
        for name in EVALUATORS.names():
            if EVALUATORS.resolve(name)[1] is cls:
                return name
    return f"{cls.__module__}:{cls.__qualname__}"


def _diagnose(streak: Sequence[Result], limit: int) -> str:
    reasons: dict[str, int] = {}
    for r in streak:
        reasons[r.reason or "error"] = reasons.get(r.reason or "error", 0) + 1
    counted = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    last = (streak[-1].error or "").splitlines()[0] if streak[-1].error else "no error text"
    return (f"stopped: {len(streak)} trials in a row failed (more than "
            f"max_consecutive_failures = {limit}; {counted}); the last one: {last}. "
            "Fix the cause and run the same command again to continue")
