"""Executors move ``Candidate -> Result``: inline, or in a pool of local worker processes.

The Study hands an executor a batch of :class:`Job` and consumes :class:`Outcome` as
each finishes, in any order; every job yields exactly one outcome, failures included,
so an executor never ends a search. A Ray executor implements the same two methods.

The process pool runs its own worker processes (``forkserver`` where available, else
``spawn``) rather than ``concurrent.futures.ProcessPoolExecutor``: when one of its
workers dies, ``ProcessPoolExecutor`` fails every pending future and cannot tell which
trial killed it, and it cannot stop one overdue task. Here each worker runs one trial
at a time, so a dead worker costs exactly its own trial (retried once, then failed
``worker-lost``) and a trial past its timeout is failed ``timeout`` by killing only its
worker. Candidates and results cross the process boundary as JSON, never pickled.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from epnas.errors import EpnasError
from epnas.evaluators import EVALUATORS, Evaluator
from epnas.trial import Candidate, Result

# Study settings an evaluator receives when its constructor has a parameter of that name.
CONTEXT_ARGUMENTS = ("dataset", "data", "seed")


@dataclass(frozen=True)
class EvaluatorSpec:
    """How to create an evaluator anywhere: registered name (or ``module:Class``) and options.

    ``context`` holds study settings (``dataset``, ``data``, ``seed``); each is passed to
    the evaluator's constructor when it takes an argument of that name. A ``dataset`` or
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
            elif name != "seed":
                raise EpnasError(f"evaluator {self.name!r} takes no {name!r} (given {value!r}); "
                                 f"its options: {', '.join(accepted) or 'none'}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EpnasError(f"evaluator {self.name!r} options: {exc}; its options: "
                             f"{', '.join(accepted) or 'none'}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "context": dict(self.context)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluatorSpec:
        return cls(data["name"], dict(data["options"]), dict(data["context"]))


def evaluate_safely(evaluator: Evaluator, candidate: Candidate) -> Result:
    """``evaluator.evaluate(candidate)``, with any exception turned into a failed Result."""
    try:
        result = evaluator.evaluate(candidate)
    except MemoryError as exc:
        return Result.failure("oom", f"MemoryError: {exc}")
    except Exception as exc:
        reason = "oom" if type(exc).__name__ == "OutOfMemoryError" else "error"
        return Result.failure(reason, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, Result):
        return Result.failure("error", f"{type(evaluator).__name__}.evaluate returned "
                                       f"{type(result).__name__}, not a Result")
    return result


@dataclass(frozen=True)
class Job:
    trial_id: int
    candidate: Candidate


@dataclass(frozen=True)
class Outcome:
    """The result of one job, where and when it ran (wall-clock ``time.time()``)."""

    trial_id: int
    result: Result
    worker: str
    start: float
    end: float


class Executor(ABC):
    """Evaluates batches of jobs; knows nothing of strategies or the store."""

    workers: int = 1

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Evaluate ``jobs``; yield one outcome per job as each finishes (any order)."""

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

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in jobs:
            start = time.time()
            result = evaluate_safely(self.evaluator, job.candidate)
            yield Outcome(job.trial_id, result, "inline", start, time.time())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ProcessExecutor(Executor):
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
    """

    def __init__(self, spec: EvaluatorSpec, workers: int, *, timeout: float | None = None,
                 threads: int | None = None, retries: int = 1) -> None:
        if workers < 1:
            raise EpnasError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.workers = workers
        self.timeout = timeout
        self.threads = threads or max(1, available_cores() // workers)
        self.retries = retries
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._context = mp.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has imported torch and epnas once.
            self._context.set_forkserver_preload(["torch", "epnas.evaluators", "epnas.spaces"])
        self._idle: list[_Worker] = []
        self._spawned = 0

    def _worker(self) -> _Worker:
        if self._idle:
            return self._idle.pop()
        self._spawned += 1
        return _Worker(self._context, self._spawned, self.spec, self.threads)

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        queue = deque(jobs)
        attempts = {job.trial_id: 0 for job in jobs}
        busy: dict[Connection, _Worker] = {}
        try:
            while queue or busy:
                while queue and len(busy) < self.workers:
                    worker = self._worker()
                    worker.start(queue.popleft(), self.timeout)
                    busy[worker.conn] = worker
                now = time.monotonic()
                deadlines = [w.deadline for w in busy.values() if w.deadline is not None]
                wait_for = max(0.0, min(deadlines) - now) if deadlines else None
                ready = wait([*busy, *(w.process.sentinel for w in busy.values())], wait_for)
                for worker in list(busy.values()):
                    outcome = self._check(worker, ready, queue, attempts)
                    if outcome is not None or worker.job is None:
                        del busy[worker.conn]
                        if worker.alive:
                            self._idle.append(worker)
                    if outcome is not None:
                        yield outcome
        finally:
            for worker in busy.values():  # abandoned mid-batch (interrupt): stop the work
                worker.kill()

    def _check(self, worker: _Worker, ready: list[Any], queue: deque[Job],
               attempts: dict[int, int]) -> Outcome | None:
        """The outcome of ``worker``'s job if it has one now; requeues a lost job."""
        job = worker.job
        assert job is not None
        if worker.conn in ready or worker.process.sentinel in ready:
            message = worker.receive()
            if message is not None and "ready" in message:
                worker.set_ready(self.timeout)
                return None
            if message is not None:
                return Outcome(job.trial_id, Result.from_dict(message["result"]),
                               worker.name, message["start"], message["end"])
            code = worker.process.exitcode
            worker.kill()
            attempts[job.trial_id] += 1
            if attempts[job.trial_id] <= self.retries:
                queue.appendleft(job)
                return None
            return Outcome(job.trial_id, Result.failure(
                "worker-lost", f"worker process died (exit code {code}) on every attempt "
                               f"({attempts[job.trial_id]})"),
                worker.name, worker.started, time.time())
        if worker.deadline is not None and time.monotonic() >= worker.deadline:
            worker.kill()
            return Outcome(job.trial_id, Result.failure(
                "timeout", f"trial exceeded its {self.timeout:g} s timeout"),
                worker.name, worker.started, time.time())
        return None

    def close(self) -> None:
        for worker in self._idle:
            worker.stop()
        self._idle = []


class _Worker:
    """One worker process and the job it is running."""

    def __init__(self, context: Any, index: int, spec: EvaluatorSpec, threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, name=f"epnas-worker-{index}",
                                       args=(child, spec.to_dict(), threads), daemon=True)
        self.process.start()
        child.close()
        self.name = f"w{index}:{self.process.pid}"
        self.job: Job | None = None
        self.ready = False  # the evaluator is created: trial timeouts apply from here
        self.deadline: float | None = None
        self.started = 0.0
        self.alive = True

    def start(self, job: Job, timeout: float | None) -> None:
        self.job = job
        self.started = time.time()
        self.deadline = None
        if self.ready:
            self.set_ready(timeout)
        # A worker that died while idle fails to receive: its sentinel reports the death
        # and the job is retried.
        with contextlib.suppress(OSError):
            self.conn.send_bytes(json.dumps({"candidate": job.candidate.to_dict()}).encode())

    def set_ready(self, timeout: float | None) -> None:
        self.ready = True
        if timeout is not None:
            self.deadline = time.monotonic() + timeout

    def receive(self) -> dict[str, Any] | None:
        """The next message (ready, or the finished job), None when the worker died."""
        try:
            if self.conn.poll():
                message = json.loads(self.conn.recv_bytes())
                if "ready" not in message:
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


def _worker_main(conn: Connection, spec: dict[str, Any], threads: int) -> None:
    """A worker: evaluate one JSON job at a time until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the Study decides how to stop
    parent = mp.parent_process()
    if parent is not None:  # a killed Study must not leave trainings running
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    import torch

    try:
        evaluator: Evaluator | None = EvaluatorSpec.from_dict(spec).create()
        setup_error = ""
    except Exception as exc:
        evaluator, setup_error = None, f"cannot create the evaluator: {type(exc).__name__}: {exc}"
    conn.send_bytes(b'{"ready": true}')  # set-up (loading data, say) is not trial time
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        start = time.time()
        torch.set_num_threads(threads)  # reused workers keep no thread setting
        try:
            candidate = Candidate.from_dict(json.loads(message)["candidate"])
        except Exception as exc:
            result = Result.failure("error", f"cannot read the candidate: {exc}")
        else:
            result = (evaluate_safely(evaluator, candidate) if evaluator is not None
                      else Result.failure("error", setup_error))
        conn.send_bytes(json.dumps({"result": result.to_dict(), "start": start,
                                    "end": time.time()}).encode())


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)
