"""Executors move ``Candidate -> Result``: inline, or in a pool of local worker processes.

The Study hands an executor a batch of :class:`Job` and consumes :class:`Outcome` as
each finishes, in any order; every job yields exactly one outcome, failures included,
so an executor never ends a search. :class:`RayExecutor` runs the same jobs on a Ray
cluster (a local one, or one it joins), with the same retry and timeout rules.

The process pool runs its own worker processes (``forkserver`` where available, else
``spawn``) rather than ``concurrent.futures.ProcessPoolExecutor``: when one of its
workers dies, ``ProcessPoolExecutor`` fails every pending future and cannot tell which
trial killed it, and it cannot stop one overdue task. Here each worker runs one trial
at a time, so a dead worker costs exactly its own trial (retried once, then failed
``worker-lost``) and a trial past its timeout is failed ``timeout`` by killing only its
worker. The process pool and the Ray executor share that dispatch loop (``_Pool``); each
brings its kind of worker. Candidates and results cross the process boundary as JSON, never pickled;
files (trained weights, the sharing dictionary's snapshot) stay on disk, named by the
job's :class:`~epnas.trial.TrialContext`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from epnas.errors import EpnasError, storage_error
from epnas.evaluators import EVALUATORS, Evaluator
from epnas.trial import STORAGE, Candidate, Result, TrialContext, TrialProgress

# Study settings an evaluator receives when its constructor has a parameter of that name;
# ``max_memory`` (``--max-memory``) lets an evaluator that trains refuse a candidate whose
# estimated memory is above it before building it. ``precision`` (the run's decided
# autocast precision) goes to a ``precision`` parameter, else into a ``schedule`` option
# dict that does not set one (see EvaluatorSpec.trains). ``constraints`` (the study's,
# as ``METRIC:LOW:HIGH:PENALTY`` strings) lets an evaluator fit what it chooses to them
# (the supernet evaluator's early-exit thresholds under an ``avg_flops`` cap).
CONTEXT_ARGUMENTS = ("dataset", "data", "seed", "max_memory", "precision", "constraints")
# an evaluator that takes none ignores them
_OPTIONAL_CONTEXT = ("seed", "max_memory", "precision", "constraints")

Stop = Callable[[], bool]  # asked before a job starts: True ends dispatching (a budget)


@dataclass(frozen=True)
class EvaluatorSpec:
    """How to create an evaluator anywhere: registered name (or ``module:Class``) and options.

    ``context`` holds study settings (:data:`CONTEXT_ARGUMENTS`); each is passed to the
    evaluator's constructor when it takes an argument of that name. A ``dataset`` or
    ``data`` the evaluator cannot take is an error rather than silently ignored.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    def create(self) -> Evaluator:
        _, cls = EVALUATORS.resolve(self.name)
        accepted = inspect.signature(cls).parameters
        kwargs = dict(self.options)
        for name in CONTEXT_ARGUMENTS:
            value = self.context.get(name)
            if value is None:
                continue
            if name in accepted:
                kwargs.setdefault(name, value)
            elif name == "precision" and "schedule" in accepted:
                kwargs["schedule"] = {"precision": value, **(kwargs.get("schedule") or {})}
            elif name not in _OPTIONAL_CONTEXT:
                raise EpnasError(f"evaluator {self.name!r} takes no {name!r} (given {value!r}); "
                                 f"its options: {', '.join(accepted) or 'none'}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EpnasError(f"evaluator {self.name!r} options: {exc}; its options: "
                             f"{', '.join(accepted) or 'none'}") from None

    def trains(self) -> bool:
        """Whether the evaluator takes a precision (a ``precision`` parameter or a
        ``schedule`` option dict): only then does a study decide one."""
        _, cls = EVALUATORS.resolve(self.name)
        accepted = inspect.signature(cls).parameters
        return "precision" in accepted or "schedule" in accepted

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "context": dict(self.context)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluatorSpec:
        return cls(data["name"], dict(data["options"]), dict(data["context"]))


def evaluate_safely(evaluator: Evaluator, candidate: Candidate,
                    context: TrialContext | None = None) -> Result:
    """``evaluator.evaluate_trial(candidate, context)``, with any exception turned into a
    failed Result."""
    try:
        result = evaluator.evaluate_trial(candidate, context or TrialContext())
    except MemoryError as exc:
        return Result.failure("oom", f"MemoryError: {exc}")
    except OSError as exc:
        storage = storage_error(exc, context and context.directory)
        if storage is not None:  # the disk, not the candidate: the Study stops on it
            return Result.failure(STORAGE, str(storage))
        return Result.failure("error", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        reason = "oom" if type(exc).__name__ == "OutOfMemoryError" else "error"
        return Result.failure(reason, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, Result):
        return Result.failure("error", f"{type(evaluator).__name__}.evaluate returned "
                                       f"{type(result).__name__}, not a Result")
    return result


@dataclass(frozen=True)
class Job:
    """One trial to evaluate: its id, candidate, where its files go, and the bytes its
    evaluation needs beyond its worker (the evaluator's ``trial_memory``; 0: unknown)."""

    trial_id: int
    candidate: Candidate
    context: TrialContext = field(default_factory=TrialContext)
    memory: float = 0.0

    def to_json(self) -> str:
        """What a worker process or actor receives (the trial id stays with the pool);
        ``progress``: whether someone listens to the trial's progress."""
        return json.dumps({"candidate": self.candidate.to_dict(),
                           "context": self.context.to_dict(),
                           "progress": self.context.progress is not None})


@dataclass(frozen=True)
class Outcome:
    """The result of one job, where and when it ran (wall-clock ``time.time()``), and
    why a worker died with it on an earlier attempt (each death, one run again)."""

    trial_id: int
    result: Result
    worker: str
    start: float
    end: float
    lost: tuple[str, ...] = ()


class Executor(ABC):
    """Evaluates batches of jobs; knows nothing of strategies or the store."""

    workers: int = 1

    @abstractmethod
    def run(self, jobs: Sequence[Job], stop: Stop | None = None) -> Iterator[Outcome]:
        """Evaluate ``jobs``; yield one outcome per job as each finishes (any order).

        ``stop`` is asked before each job starts: once it returns True no other job
        starts, the running ones finish, and the jobs never started yield nothing.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Kind, workers, threads and devices, as ``env.json`` records them."""

    def close(self) -> None:  # noqa: B027 (most executors hold nothing to release)
        """Release workers; the executor is not used afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineExecutor(Executor):
    """Evaluates in the calling process, one job after another, in order.

    Args:
        evaluator: the evaluator.
        workers: the batch size the Study asks for; more than 1 lets an inline run
            ask exactly what a parallel run with that many workers asks.
    """

    def __init__(self, evaluator: Evaluator, workers: int = 1) -> None:
        self.evaluator = evaluator
        self.workers = workers

    def describe(self) -> dict[str, Any]:
        import torch

        return {"kind": "inline", "workers": self.workers, "threads": torch.get_num_threads()}

    def run(self, jobs: Sequence[Job], stop: Stop | None = None) -> Iterator[Outcome]:
        for job in jobs:
            if stop is not None and stop():
                return
            start = time.time()
            result = evaluate_safely(self.evaluator, job.candidate, job.context)
            yield Outcome(job.trial_id, result, "inline", start, time.time())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


WORKER_MEMORY = 250e6
"""Bytes a local worker process costs before its trial trains anything: an idle worker
that has imported torch and epnas and created its evaluator measured 228 MB resident on
Linux (synthetic and digits training evaluators alike; most of it shared with the
forkserver), 280-340 MB after one digits trial."""


def available_memory() -> float | None:
    """Bytes of memory new processes can take now (Linux ``MemAvailable``); None when
    this system does not tell."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class WorkerLimit:
    """How many local workers a study uses, of how many it was asked for, and why fewer.

    ``str()`` is the one line a user sees when the request was cut.
    """

    workers: int
    requested: int
    reason: str | None = None  # None: the request fits

    def __str__(self) -> str:
        if self.reason is None:
            return f"using {self.workers} workers"
        return f"using {self.workers} workers instead of {self.requested}: {self.reason}"


def limit_workers(requested: int, *, trials: int | None = None, trial_memory: float = 0.0,
                  cores: int | None = None, memory: float | None = None) -> WorkerLimit:
    """Local worker processes for a request of ``requested``: at most one per available
    core, one per trial of the budget, and as many as the available memory holds at
    :data:`WORKER_MEMORY` plus ``trial_memory`` (what one trial trains with) each.

    Args:
        requested: the workers asked for (``--workers``).
        trials: the trial budget (None: no limit).
        trial_memory: bytes one trial needs beyond its worker process (the cost model's
            training-memory estimate of a typical candidate; 0 for evaluators that do not
            train).
        cores, memory: the available cores and bytes (default: measured now).
    """
    cores = available_cores() if cores is None else cores
    memory = available_memory() if memory is None else memory
    limits = [(cores, f"{cores} CPU core{'s' * (cores != 1)} available")]
    if trials is not None:
        limits.append((trials, f"the budget is {trials} trial{'s' * (trials != 1)}"))
    if memory is not None:
        each = WORKER_MEMORY + max(0.0, trial_memory)
        detail = (f"{WORKER_MEMORY / 1e9:.2f} GB per worker process" if trial_memory <= 0 else
                  f"{WORKER_MEMORY / 1e9:.2f} GB per worker process + {trial_memory / 1e9:.2f} "
                  "GB estimated training memory of a typical candidate")
        limits.append((int(memory // each),
                       f"{memory / 1e9:.1f} GB of memory available at {detail}"))
    workers, reason = requested, None
    for most, why in limits:
        if max(1, most) < workers:
            workers, reason = max(1, most), why
    return WorkerLimit(workers, requested, reason)


CUDA_CONTEXT_MEMORY = 500e6
"""Bytes of GPU memory a worker process takes on its GPU before its trial allocates
anything (the CUDA context, cuDNN and cuBLAS workspaces): a documented guess, to be
replaced by the figure ``benchmarks/gpu_check.py`` measures on a GPU."""


def gpu_free_memory() -> list[float]:
    """Free bytes of each GPU torch sees, asked in a short subprocess (a few seconds), so
    that this process creates no CUDA context that its workers would share the GPU with
    for the whole run; [] without GPUs or when the query fails."""
    code = ("import json, torch; print(json.dumps([torch.cuda.mem_get_info(i)[0] "
            "for i in range(torch.cuda.device_count())]))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True)
        return [float(b) for b in json.loads(done.stdout.strip().splitlines()[-1])]
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return []


def gpu_workers(per_gpu: int | str, *, trial_memory: float = 0.0, count: int | None = None,
                free: Sequence[float] | None = None, cores: int | None = None) -> WorkerLimit:
    """Local workers for ``--workers-per-gpu``: ``per_gpu`` on each of ``count`` GPUs.

    ``"auto"`` sizes it from the least free GPU memory divided by ``trial_memory`` (the
    cost model's largest training-memory estimate of the study's candidates) plus
    :data:`CUDA_CONTEXT_MEMORY` per worker, at most ``cores // count`` and at least 1.

    Args:
        per_gpu: workers per GPU, or ``"auto"``.
        trial_memory: bytes one trial needs on its GPU.
        count: GPUs (default ``torch.cuda.device_count()``); 0 gives 0 workers.
        free: free bytes per GPU (default :func:`gpu_free_memory`, asked only for auto).
        cores: available cores (default :func:`available_cores`).
    """
    if count is None:
        import torch

        count = torch.cuda.device_count()  # asks the driver; CUDA stays uninitialised
    if count == 0:
        return WorkerLimit(0, 0, "no GPU")
    if per_gpu != "auto":
        if int(per_gpu) < 1:
            raise EpnasError(f"workers per GPU must be at least 1 or auto, got {per_gpu!r}")
        return WorkerLimit(int(per_gpu) * count, int(per_gpu) * count)
    cores = available_cores() if cores is None else cores
    most = max(1, cores // count)
    free = gpu_free_memory() if free is None else list(free)
    if not free:
        return WorkerLimit(most * count, most * count)
    each = CUDA_CONTEXT_MEMORY + max(0.0, trial_memory)
    fit = int(min(free) // each)
    if fit >= most:  # the cores decide
        return WorkerLimit(most * count, most * count)
    per = max(1, fit)
    return WorkerLimit(per * count, most * count,
                       f"{min(free) / 1e9:.1f} GB free per GPU at {each / 1e9:.2f} GB a worker "
                       f"({CUDA_CONTEXT_MEMORY / 1e9:.2f} GB CUDA context + "
                       f"{max(0.0, trial_memory) / 1e9:.2f} GB largest estimated trial)")


class _PoolWorker(ABC):
    """One worker of a pool (a local process, a Ray actor) and the job it runs."""

    name: str
    job: Job | None = None
    started = 0.0  # when its job started (wall clock)
    deadline: float | None = None  # when its job times out (monotonic); None: no limit
    alive = True

    @abstractmethod
    def start(self, job: Job, timeout: float | None) -> None:
        """Send it ``job``; its timeout runs once its evaluator is created."""

    @abstractmethod
    def handles(self) -> list[Any]:
        """What the pool waits on for news of this worker."""

    @abstractmethod
    def poll(self, ready: Sequence[Any], timeout: float | None) -> Outcome | _Lost | None:
        """Its news once ``ready`` (the handles that are) came in: the outcome of its
        job, :class:`_Lost` when it died (it is then killed), None while it runs."""

    @abstractmethod
    def kill(self) -> None:
        """Stop it now; it is not used again."""


@dataclass(frozen=True)
class _Lost:
    """A worker died with its job: ``what`` died, and ``cause`` when known."""

    what: str
    cause: str | None = None


W = TypeVar("W", bound=_PoolWorker)


class _Pool(Executor, Generic[W]):
    """The dispatch loop that local worker processes and Ray actors share: one job per
    worker at a time, a job whose worker died run again ``retries`` times before it fails
    ``worker-lost``, one past ``timeout`` failed ``timeout`` by killing its worker."""

    timeout: float | None
    retries: int
    # bytes the running trials may take together (Job.memory): a job that does not fit
    # beside the running ones waits for them; None: not checked (Ray's remote machines)
    memory: float | None = None
    _idle: list[W]

    @abstractmethod
    def _acquire(self, busy: Sequence[W]) -> W:
        """An idle worker, or a new one (beside the ``busy`` ones)."""

    @abstractmethod
    def _wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        """The ``handles`` that are ready, after waiting up to ``timeout`` for one."""

    def _lend(self, busy: Sequence[W], waiting: bool) -> None:
        """Hook: give the running jobs the idle workers' threads (process pool)."""

    def _release(self, worker: W) -> None:
        """A worker whose job ended: idle again when alive."""
        if worker.alive:
            self._idle.append(worker)

    def run(self, jobs: Sequence[Job], stop: Stop | None = None) -> Iterator[Outcome]:
        queue = deque(jobs)
        attempts = {job.trial_id: 0 for job in jobs}
        deaths: dict[int, list[str]] = {}  # why each lost attempt's worker died
        busy: list[W] = []
        try:
            while queue or busy:
                if queue and stop is not None and stop():
                    queue.clear()  # a budget ran out: the running jobs still finish
                    continue
                while queue and (refusal := self._refuse(queue[0])) is not None:
                    job, now = queue.popleft(), time.time()
                    yield Outcome(job.trial_id, Result.failure("memory", refusal),
                                  "pool", now, now)
                while queue and len(busy) < self.workers and self._fits(queue[0], busy):
                    worker = self._acquire(busy)
                    worker.start(queue.popleft(), self.timeout)
                    busy.append(worker)
                self._lend(busy, bool(queue))
                deadlines = [w.deadline for w in busy if w.deadline is not None]
                wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = self._wait([h for w in busy for h in w.handles()], wait_for)
                for worker in list(busy):
                    outcome = self._check(worker, ready, queue, attempts, deaths)
                    if outcome is not None or not worker.alive:
                        busy.remove(worker)
                        self._release(worker)
                    if outcome is not None:
                        yield replace(outcome, lost=tuple(deaths.get(outcome.trial_id, ())))
        finally:
            for worker in busy:  # abandoned mid-batch (interrupt): stop the work
                worker.kill()
                self._release(worker)

    def _fits(self, job: Job, busy: Sequence[W]) -> bool:
        """Whether ``job`` may start beside the ``busy`` workers' jobs now (alone, always:
        the Study refuses a job that does not fit at all)."""
        if self.memory is None or not busy:
            return True
        return sum(w.job.memory for w in busy if w.job is not None) + job.memory <= self.memory

    def _refuse(self, job: Job) -> str | None:
        """Why ``job`` may never start here (failed ``memory``); None: it may."""
        return None

    def _check(self, worker: W, ready: list[Any], queue: deque[Job],
               attempts: dict[int, int], deaths: dict[int, list[str]]) -> Outcome | None:
        """The outcome of ``worker``'s job if it has one now; requeues a lost job."""
        job = worker.job
        assert job is not None
        news = worker.poll(ready, self.timeout)
        if isinstance(news, _Lost):
            attempts[job.trial_id] += 1
            deaths.setdefault(job.trial_id, []).append(
                f"{news.what} on {worker.name}" + (f": {news.cause}" if news.cause else ""))
            if attempts[job.trial_id] <= self.retries:
                queue.appendleft(job)
                return None
            cause = f": {news.cause}" if news.cause else ""
            return Outcome(job.trial_id, Result.failure(
                "worker-lost", f"{news.what} on every attempt ({attempts[job.trial_id]})"
                               f"{cause}"), worker.name, worker.started, time.time())
        if news is None and worker.deadline is not None and time.monotonic() >= worker.deadline:
            worker.kill()
            return Outcome(job.trial_id, Result.failure(
                "timeout", f"trial exceeded its {self.timeout:g} s timeout"),
                worker.name, worker.started, time.time())
        return news


class _Worker(_PoolWorker):
    """One worker process and the job it is running."""

    def __init__(self, context: Any, index: int, slot: int, spec: EvaluatorSpec, threads: int,
                 device: str | None) -> None:
        self.conn, child = context.Pipe()
        # the torch threads its trial may use now (the pool lends idle workers' cores)
        self.allowance = context.RawValue("i", threads)
        self.process = context.Process(target=_worker_main, name=f"epnas-worker-{index}",
                                       args=(child, spec.to_dict(), threads, device,
                                             self.allowance),
                                       daemon=True)
        self.process.start()
        child.close()
        self.slot = slot
        self.device = device
        self.name = f"w{index}:{self.process.pid}" + (f":gpu{device}" if device else "")
        self.ready = False  # the evaluator is created: trial timeouts apply from here

    def start(self, job: Job, timeout: float | None) -> None:
        self.job = job
        self.started = time.time()
        self.deadline = None
        if self.ready:
            self.set_ready(timeout)
        # A worker that died while idle fails to receive: its sentinel reports the death
        # and the job is retried.
        with contextlib.suppress(OSError):
            self.conn.send_bytes(job.to_json().encode())

    def set_ready(self, timeout: float | None) -> None:
        self.ready = True
        if timeout is not None:
            self.deadline = time.monotonic() + timeout

    def handles(self) -> list[Any]:
        return [self.conn, self.process.sentinel]

    def poll(self, ready: Sequence[Any], timeout: float | None) -> Outcome | _Lost | None:
        job = self.job
        assert job is not None
        if self.conn not in ready and self.process.sentinel not in ready:
            return None
        message = self.receive()
        if message is not None and "ready" in message:
            self.set_ready(timeout)
            return None
        if message is not None and "progress" in message:  # the trial goes on
            job.context.report(*message["progress"])
            return None
        if message is not None:
            return Outcome(job.trial_id, Result.from_dict(message["result"]), self.name,
                           message["start"], message["end"])
        self.process.join(timeout=5)  # its pipe can close a moment before it is reaped
        code = self.process.exitcode
        self.kill()
        return _Lost(f"worker process died ({_exit_text(code)})")

    def receive(self) -> dict[str, Any] | None:
        """The next message (ready, progress, or the finished job), None when the worker
        died."""
        try:
            if self.conn.poll():
                message = json.loads(self.conn.recv_bytes())
                if "result" in message:
                    self.job = None
                return message
        except (EOFError, OSError):
            pass
        return None

    def kill(self) -> None:
        self.alive = False
        self.job = None
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_bytes(b"")
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _exit_text(code: int | None) -> str:
    """A process exit code as words: ``killed by signal 9 (SIGKILL)``, ``exit code 3``."""
    if code is not None and code < 0:  # multiprocessing: minus the signal that ended it
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-code}{name}"
    return f"exit code {code}"


class ProcessExecutor(_Pool[_Worker]):
    """A pool of local worker processes, one trial per worker at a time.

    Args:
        spec: the evaluator each worker creates for itself.
        workers: number of worker processes.
        timeout: seconds a trial may run before its worker is killed and the trial
            fails with ``timeout`` (None: no limit).
        threads: torch threads per worker (default: cores // workers, at least 1), set
            by the worker before every trial.
        retries: how often a trial whose worker died is run again before it fails
            with ``worker-lost``.
        devices: the GPU each worker slot sees, as a ``CUDA_VISIBLE_DEVICES`` value
            (default :func:`pin_devices`: round-robin over the visible GPUs, none
            without GPUs). A worker that replaces a dead one keeps its slot's GPU.
        elastic: lend idle workers' cores to the trials still running when nothing is
            left to dispatch (the end of a batch: steps are synchronous), so no core
            waits while the last trial trains on one. The trainer takes the threads at
            its next step (:mod:`epnas.train.threads`); the sum over workers never
            exceeds ``workers x threads``. CPU workers only. A trial's floating-point
            result then depends on the threads it got, so a parallel run repeats only
            to rounding; turn it off for bit-for-bit repeatable parallel runs.
    """

    def __init__(self, spec: EvaluatorSpec, workers: int, *, timeout: float | None = None,
                 threads: int | None = None, retries: int = 1,
                 devices: Sequence[str | None] | None = None, elastic: bool = True) -> None:
        if workers < 1:
            raise EpnasError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.workers = workers
        self.timeout = timeout
        self._fixed = (threads is not None, devices is not None)  # given, not derived
        self.threads = threads or max(1, available_cores() // workers)
        self.retries = retries
        self.devices = list(devices) if devices is not None else pin_devices(workers)
        self.elastic = elastic and not any(self.devices)
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._context = mp.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has imported torch and epnas once.
            self._context.set_forkserver_preload(
                ["torch", "torch._dynamo", "epnas.evaluators", "epnas.spaces", "epnas.train"])
        self._idle: list[_Worker] = []
        self._slots: set[int] = set()  # slots with a live worker
        # bytes the trials on one GPU may take together (Job.memory): a job that does not
        # fit beside the running ones on the least loaded GPU waits, one above it alone is
        # failed ``memory``; None: not checked
        self.gpu_memory: float | None = None
        self._spawned = 0

    def start(self, count: int | None = None) -> None:
        """Start ``count`` workers now (None: all), without waiting for them: they import
        and create their evaluators meanwhile. :meth:`run` starts the others when a job
        needs them, so a batch never has more workers than jobs."""
        count = self.workers if count is None else min(count, self.workers)
        while len(self._slots) < count:
            self._idle.insert(0, self._worker(new=True))

    def limit(self, workers: int) -> None:
        """Use at most ``workers`` workers from now on (before :meth:`run`).

        The threads and devices derived from the number of workers are derived again;
        a worker already started with other threads or another device, or in a slot
        beyond ``workers``, stops (the next job starts one anew).
        """
        if workers >= self.workers:
            return
        if workers < 1:
            raise EpnasError(f"workers must be at least 1, got {workers}")
        threads = self.threads
        self.workers = workers
        threads_given, devices_given = self._fixed
        if not threads_given:
            self.threads = max(1, available_cores() // workers)
        if not devices_given:
            self.devices = pin_devices(workers)
        keep = []
        for worker in self._idle:
            device = self.devices[worker.slot % len(self.devices)] if self.devices else None
            if worker.slot < workers and threads == self.threads and device == worker.device:
                keep.append(worker)
            else:
                worker.kill()
                self._slots.discard(worker.slot)
        self._idle = keep

    def _worker(self, new: bool = False, device: str | None = None) -> _Worker:
        """An idle worker, or (``new``) one started in a free slot (of ``device``'s when
        given)."""
        if self._idle and not new:
            return self._idle.pop()
        self._spawned += 1
        free = set(range(self.workers)) - self._slots
        on_device = {i for i in free if device is not None and self.devices and
                     self.devices[i % len(self.devices)] == device}
        slot = min(on_device or free)
        self._slots.add(slot)
        return _Worker(self._context, self._spawned, slot, self.spec, self.threads,
                       self.devices[slot % len(self.devices)] if self.devices else None)

    def describe(self) -> dict[str, Any]:
        return {"kind": "process", "workers": self.workers, "threads": self.threads,
                "devices": self.devices, "elastic": self.elastic,
                "gpu_memory": self.gpu_memory}

    def _lend(self, busy: Sequence[_Worker], waiting: bool) -> None:
        """Give the running trials the idle workers' threads when nothing waits."""
        spare = self.threads * (self.workers - len(busy)) if self.elastic and not waiting else 0
        for i, worker in enumerate(busy):
            worker.allowance.value = self.threads + spare // len(busy) + (i < spare % len(busy))

    def _acquire(self, busy: Sequence[_Worker]) -> _Worker:
        if self.gpu_memory is None or not self.devices:
            return self._worker()
        device = self._roomiest(busy)  # GPU memory checked: the least loaded GPU's worker
        for i in range(len(self._idle) - 1, -1, -1):
            if self._idle[i].device == device:
                return self._idle.pop(i)
        return self._worker(new=True, device=device)

    def _gpu_load(self, busy: Sequence[_Worker]) -> dict[str | None, float]:
        """Estimated bytes the running trials take on each GPU a worker slot may use."""
        load = {d: 0.0 for d in self.devices}
        for w in busy:
            if w.job is not None:
                load[w.device] = load.get(w.device, 0.0) + w.job.memory
        return load

    def _roomiest(self, busy: Sequence[_Worker]) -> str | None:
        """The GPU with a free worker slot or an idle worker and the least load."""
        used = {w.slot for w in busy}
        open_ = {self.devices[slot % len(self.devices)]
                 for slot in range(self.workers) if slot not in used}
        load = self._gpu_load(busy)
        return min(open_ or set(load), key=lambda d: (load[d], str(d)))

    def _fits(self, job: Job, busy: Sequence[_Worker]) -> bool:
        if not super()._fits(job, busy):
            return False
        if self.gpu_memory is None or not self.devices or not busy:
            return True
        return self._gpu_load(busy)[self._roomiest(busy)] + job.memory <= self.gpu_memory

    def _refuse(self, job: Job) -> str | None:
        if self.gpu_memory is not None and self.devices and job.memory > self.gpu_memory:
            return (f"estimated training memory {job.memory / 1e9:.2f} GB is more than the "
                    f"{self.gpu_memory / 1e9:.2f} GB of GPU memory available to trials; not "
                    "trained (--max-memory keeps such candidates out)")
        return None

    def _wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        return wait(handles, timeout)

    def _release(self, worker: _Worker) -> None:
        super()._release(worker)
        if not worker.alive:
            self._slots.discard(worker.slot)

    def close(self) -> None:
        for worker in self._idle:
            if worker.ready or worker.job is not None:
                worker.stop()
            else:  # started but never used (a study refused its settings): no waiting
                worker.kill()
        self._idle = []
        self._slots = set()


def pin_devices(workers: int, visible: str | None = None,
                count: int | None = None) -> list[str | None]:
    """The GPU of each of ``workers`` local worker slots, round-robin (one GPU per worker).

    Args:
        workers: number of worker slots.
        visible: this process's ``CUDA_VISIBLE_DEVICES`` (default: read from the
            environment); workers choose among these devices.
        count: GPUs torch sees (default ``torch.cuda.device_count()``).

    Returns:
        a ``CUDA_VISIBLE_DEVICES`` value per slot, or None per slot without GPUs.
    """
    if count is None:
        import torch

        count = torch.cuda.device_count()  # asks the driver; CUDA stays uninitialised
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else []
    ids = ids[:count] if ids else [str(i) for i in range(count)]
    if not ids:
        return [None] * workers
    return [ids[i % len(ids)] for i in range(workers)]


class _Actor(_PoolWorker):
    """A Ray actor of :class:`RayExecutor`, the job it runs and since when."""

    def __init__(self, ray: Any, handle: Any, ready: Any) -> None:
        self._ray = ray
        self.handle = handle
        self.ready: Any = ready  # the ref of its start-up, until it resolved
        self.name = "ray"
        self.call: Any = None

    def start(self, job: Job, timeout: float | None) -> None:
        self.job, self.started, self.deadline = job, time.time(), None
        self.call = self.handle.evaluate.remote(job.to_json())
        if self.ready is None and timeout is not None:
            self.deadline = time.monotonic() + timeout

    def set_ready(self, timeout: float | None) -> None:
        """Its evaluator is created: the trial's timeout runs from here."""
        with contextlib.suppress(self._ray.exceptions.RayError):  # died: its call says so
            self.name = self._ray.get(self.ready)
        self.ready = None
        if timeout is not None:
            self.deadline = time.monotonic() + timeout

    def handles(self) -> list[Any]:
        return [self.call] if self.ready is None else [self.call, self.ready]

    def poll(self, ready: Sequence[Any], timeout: float | None) -> Outcome | _Lost | None:
        ray, job = self._ray, self.job
        assert job is not None
        if self.ready is not None and self.ready in ready:
            self.set_ready(timeout)
        if self.call not in ready:
            return None
        if self.ready is not None:  # its call finished before its start-up was seen
            self.set_ready(None)
        try:
            message = json.loads(ray.get(self.call))
        except ray.exceptions.RayActorError as exc:
            self.kill()
            text = str(exc).strip()
            return _Lost("Ray worker died", text.splitlines()[0] if text else type(exc).__name__)
        except ray.exceptions.RayError as exc:  # the call failed, the actor lives on
            return Outcome(job.trial_id, Result.failure("error", f"{type(exc).__name__}: {exc}"),
                           self.name, self.started, time.time())
        return Outcome(job.trial_id, Result.from_dict(message["result"]), self.name,
                       message["start"], message["end"])

    def kill(self) -> None:
        self.alive = False
        self._ray.kill(self.handle, no_restart=True)


class RayExecutor(_Pool[_Actor]):
    """Trials on a Ray cluster: a local one it starts, or an existing one it joins.

    Each worker is a Ray actor holding one evaluator (created once, like a pool worker,
    so loading data is not trial time) and running one trial at a time; it reserves
    ``threads`` CPUs and, on a cluster with GPUs, ``gpus`` GPUs (Ray then sets its
    ``CUDA_VISIBLE_DEVICES``). A trial whose actor dies (its process killed, its node
    lost) is run again on a fresh actor, ``retries`` times, then fails ``worker-lost``;
    a trial past ``timeout`` kills its actor and fails ``timeout``. Candidates and
    results cross as JSON text.

    Args:
        spec: the evaluator each actor creates for itself.
        workers: trials in flight (None: one per GPU of the cluster, else one per CPU).
        address: ``local`` (start a Ray instance on this machine), ``auto`` (join the
            cluster of ``ray start`` on this machine) or a cluster address. Ignored when
            Ray is already initialised in this process.
        timeout: seconds a trial may run (None: no limit).
        threads: torch threads (and Ray CPUs) per trial (None: the cluster's CPUs
            divided among the workers, at least 1).
        retries: runs again of a trial whose actor died.
        gpus: GPUs per trial (None: 1 where the cluster has GPUs, else 0).
        num_cpus: CPUs of a ``local`` Ray instance (None: all of this machine's).
    """

    def __init__(self, spec: EvaluatorSpec, workers: int | None = None, *,
                 address: str = "local", timeout: float | None = None,
                 threads: int | None = None, retries: int = 1, gpus: float | None = None,
                 num_cpus: int | None = None) -> None:
        ray = import_ray()
        self._ray = ray
        self._owner = not ray.is_initialized()
        if self._owner:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.ERROR}
            try:
                if address == "local":
                    ray.init(num_cpus=num_cpus, **options)
                else:
                    ray.init(address=address, **options)
            except ConnectionError as exc:
                raise EpnasError(f"cannot join the Ray cluster at {address!r}: {exc}; start "
                                 "one with `ray start --head`, or use --ray for a local "
                                 "one") from None
        resources = ray.cluster_resources()
        cpus, cluster_gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
        self.gpus = (1.0 if cluster_gpus >= 1 else 0.0) if gpus is None else gpus
        if workers is None:
            workers = int(cluster_gpus // self.gpus) if self.gpus else cpus
        if workers < 1:
            raise EpnasError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, cpus // workers)
        self.timeout = timeout
        self.retries = retries
        self.spec = spec
        # A local cluster's workers import user code (module:Class specs) as this process does.
        path = [os.getcwd(), *sys.path] if address == "local" else []
        self._new_actor = functools.partial(
            ray.remote(num_cpus=self.threads, num_gpus=self.gpus, max_restarts=0)(
                _TrialActor).remote, spec.to_dict(), self.threads, path)
        self._idle: list[_Actor] = []
        self.address = address

    def describe(self) -> dict[str, Any]:
        ray = self._ray
        return {"kind": "ray", "address": self.address, "ray": ray.__version__,
                "workers": self.workers, "threads": self.threads, "gpus": self.gpus,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "cluster": ray.cluster_resources()}

    def _acquire(self, busy: Sequence[_Actor]) -> _Actor:
        if self._idle:
            return self._idle.pop()
        handle = self._new_actor()
        return _Actor(self._ray, handle, handle.where.remote())

    def _wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        return _ray_ready(self._ray, handles, timeout)

    def close(self) -> None:
        for actor in self._idle:
            actor.kill()
        self._idle = []
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()


def _ray_ready(ray: Any, refs: list[Any], timeout: float | None) -> list[Any]:
    """The refs that are ready, after waiting up to ``timeout`` for the first one."""
    # fetch_local=False: results are small and fetched by ray.get; with fetching, every
    # ray.wait costs tens of milliseconds on a busy machine (measured: study_overhead.py).
    done, rest = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
    if done and rest:  # one wait per batch of finished trials, not one per trial
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)
        done += more
    return done


def import_ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EpnasError("the Ray executor needs Ray: pip install 'epnas[ray]'") from None
    return ray


class _TrialActor:
    """The Ray actor of :class:`RayExecutor` (made remote when the executor starts)."""

    def __init__(self, spec: dict[str, Any], threads: int, path: list[str]) -> None:
        sys.path[:0] = [p for p in path if p not in sys.path]
        self.runner = _TrialRunner(spec, threads)

    def where(self) -> str:
        return f"ray:{socket.gethostname()}:{os.getpid()}"

    def evaluate(self, message: str) -> str:
        return self.runner.run(message).decode()


def _worker_main(conn: Connection, spec: dict[str, Any], threads: int,
                 device: str | None = None, allowance: Any = None) -> None:
    """A worker: evaluate one JSON job at a time until told to stop or orphaned."""
    if device is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    if allowance is not None:
        from epnas.train.threads import lend

        lend(allowance)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the Study decides how to stop
    exit_with_parent()  # a killed Study must not leave trainings running
    trial = _TrialRunner(spec, threads)
    conn.send_bytes(b'{"ready": true}')  # set-up (loading data, say) is not trial time

    def report(epoch: int, epochs: int, figures: Mapping[str, float]) -> None:
        with contextlib.suppress(OSError):  # a Study gone: the result fails to send too
            conn.send_bytes(json.dumps({"progress": [epoch, epochs, dict(figures)]}).encode())

    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        conn.send_bytes(trial.run(message, report))


class _TrialRunner:
    """The worker side of both pools: one evaluator, JSON candidates in, JSON results out."""

    def __init__(self, spec: Mapping[str, Any], threads: int) -> None:
        self.threads = threads
        try:
            self.evaluator: Evaluator | None = EvaluatorSpec.from_dict(spec).create()
            self.setup_error = ""
        except Exception as exc:
            self.evaluator = None
            self.setup_error = f"cannot create the evaluator: {type(exc).__name__}: {exc}"

    def run(self, message: bytes | str, report: TrialProgress | None = None) -> bytes:
        """Evaluate one JSON job; ``report`` hears its progress when the job asks for it."""
        import torch

        start = time.time()
        torch.set_num_threads(self.threads)  # reused workers (Ray's too) keep no setting
        try:
            job = json.loads(message)
            candidate = Candidate.from_dict(job["candidate"])
            context = TrialContext.from_dict(job.get("context", {}))
            if report is not None and job.get("progress"):
                context = replace(context, progress=report)
        except Exception as exc:
            result = Result.failure("error", f"cannot read the candidate: {exc}")
        else:
            result = (evaluate_safely(self.evaluator, candidate, context)
                      if self.evaluator is not None
                      else Result.failure("error", self.setup_error))
        if result.reason == "oom" and torch.cuda.is_initialized():
            # hand the failed trial's cached blocks back: other workers share the GPU
            torch.cuda.empty_cache()
        return json.dumps({"result": result.to_dict(), "start": start,
                           "end": time.time()}).encode()


def exit_with_parent() -> None:
    """In a child process: end it as soon as its parent process ends (a killed parent
    must not leave its workers running); nothing in a process without a parent."""
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)
