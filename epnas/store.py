"""The study's store: SQLite in ``RUN_DIR/study.db``, crash-safe by construction.

Every state change is one transaction (WAL journal, so a process killed at any instant
leaves the last committed state): a batch of trials is created in one, each finished
trial is written in its own as soon as it finishes, and a batch is closed in one that
also holds the strategy checkpoint (when one is due) and the per-episode statistics, so
a checkpoint never refers to results that are not stored. Strategy state is serialised with
``torch.save`` and read back with ``torch.load(weights_only=True)``: nothing is
unpickled. ``trials.csv`` is exported alongside for humans and spreadsheets.

A run directory is held by one process at a time: ``RUN_DIR/lock`` carries an advisory
``flock`` and the holder's pid, so a second process is refused with that pid and the
lock of a killed process is free again at once.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from epnas.errors import EpnasError, storage_error
from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome
from epnas.trial import Candidate, Result

SCHEMA_VERSION = 2  # 2: trials.retries and trials.lost
DB_NAME = "study.db"
CSV_NAME = "trials.csv"
LOCK_NAME = "lock"
FINISHED = ("done", "cached", "failed")

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY, size INTEGER NOT NULL, closed INTEGER NOT NULL DEFAULT 0,
    start_time REAL NOT NULL, end_time REAL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY, batch INTEGER NOT NULL REFERENCES batches(id),
    position INTEGER, key TEXT NOT NULL, fidelity TEXT, genome TEXT NOT NULL,
    info TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, error TEXT, metrics TEXT,
    reward REAL, feasible INTEGER, source INTEGER, worker TEXT,
    start_time REAL, end_time REAL, retries INTEGER NOT NULL DEFAULT 0, lost TEXT);
CREATE INDEX trials_by_key ON trials (key, fidelity);
CREATE INDEX trials_by_batch ON trials (batch, position);
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), batch INTEGER NOT NULL, state BLOB NOT NULL,
    time REAL NOT NULL);
CREATE TABLE episodes (episode INTEGER PRIMARY KEY, stats TEXT NOT NULL);
"""

# what brings a store of each older schema up to the next one
_MIGRATIONS = {1: ("ALTER TABLE trials ADD COLUMN retries INTEGER NOT NULL DEFAULT 0",
                   "ALTER TABLE trials ADD COLUMN lost TEXT")}


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial.

    Attributes:
        id: trial number, from 1 in ask order.
        batch: the ask batch it belongs to; ``position`` its index there (None for a
            finished trial a resumed strategy did not ask again, see :mod:`epnas.study`).
        status: ``queued``, ``running``, ``done``, ``cached`` or ``failed``.
        source: for ``cached`` trials, the trial whose result was reused.
        retries: how often it was run again because its worker died; ``lost`` says
            why each time (the signal that killed a worker process, say).
    """

    id: int
    batch: int
    position: int | None
    key: str
    fidelity: str | None
    genome_json: str
    info: Mapping[str, Any]
    status: str
    reason: str | None = None
    error: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    reward: float | None = None
    feasible: bool | None = None
    source: int | None = None
    worker: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    retries: int = 0
    lost: str | None = None

    @cached_property
    def genome(self) -> Genome:
        return load_genome(self.genome_json)

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.genome, self.fidelity, self.info)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def result(self) -> Result:
        """The scored result of a finished trial."""
        return Result(self.status, dict(self.metrics), self.reason, self.error, self.reward,
                      self.feasible)

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return None if value is None or math.isnan(value) else float(value)

    @property
    def rank(self) -> tuple[float, float, int]:
        """How good a trial is, the larger the better, wherever a best trial is chosen:
        its reward, then the lower validation loss (equal accuracies are common on a
        small validation set, digits' 144 images), then the earlier trial."""
        loss = self.metrics.get("val_loss", math.inf)
        return (self.reward or 0.0, -loss if math.isfinite(loss) else -math.inf, -self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "batch": self.batch, "key": self.key, "fidelity": self.fidelity,
                "status": self.status, "reason": self.reason, "error": self.error,
                "metrics": dict(self.metrics), "reward": self.reward, "feasible": self.feasible,
                "source": self.source, "worker": self.worker, "start_time": self.start_time,
                "end_time": self.end_time, "retries": self.retries, "lost": self.lost,
                "info": dict(self.info),
                "genome": json.loads(self.genome_json)}


@dataclass(frozen=True)
class NewTrial:
    """A trial row to create: to evaluate (``running``), waiting on an identical
    candidate of its batch (``queued``), or answered from the store (``cached``)."""

    position: int
    candidate: Candidate
    status: str
    result: Result | None = None
    source: int | None = None


class RunLock:
    """Exclusive use of a run directory by one live process.

    Raises:
        EpnasError: another live process holds it (the message names its pid), or the
            directory is not writable.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                if (error := storage_error(exc)) is not None:  # read-only, full, no permission
                    raise error from None
                raise EpnasError(f"cannot write to run directory {run_dir}: {exc.strerror}; "
                                 "choose another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise EpnasError(f"run directory {run_dir} is in use by process {holder} "
                                 f"(lock file {self.path}); wait for it to finish or stop "
                                 "it, or choose another --out") from None
            # A releasing holder unlinks the file: make sure we locked the file in place.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def holder_pid(run_dir: Path) -> int | None:
    """The pid of the live process holding ``run_dir``, or None when it is free."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


class Store:
    """Trials, the study config, strategy checkpoints and episode stats.

    Args:
        run_dir: the run directory (``None``: an in-memory store, no files, no lock).
        readonly: open an existing store for reading only (``epnas status``), without
            taking the lock.
        lock: the run directory's lock, when the caller took it already.
    """

    def __init__(self, run_dir: str | Path | None, *, readonly: bool = False,
                 lock: RunLock | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.readonly = readonly
        self._lock: RunLock | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # read-only storage
        self._last_export = 0.0
        self._version = SCHEMA_VERSION
        if self.run_dir is None:
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self._create()
            return
        db_path = self.run_dir / DB_NAME
        if readonly:
            if not db_path.is_file():
                raise EpnasError(f"{self.run_dir} holds no study ({DB_NAME} is missing)")
            self.db = self._connect_readonly(db_path)
            try:
                self._check_version()
            except BaseException:
                self.close(export=False)
                raise
            return
        self._lock = lock or RunLock(self.run_dir)
        self.db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        try:
            version = self._check_version()
            if version == 0:
                self._create()
            elif version < SCHEMA_VERSION:
                self._migrate(version)
            # WAL with synchronous=NORMAL survives any crash of this process; only a
            # power cut can lose the last transactions, never corrupt the store.
            self.db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self.close(export=False)
            raise

    def _connect_readonly(self, db_path: Path) -> sqlite3.Connection:
        """A query-only connection to ``db_path``, on read-only storage too."""
        # mode=ro would leave -wal/-shm files behind (it may not remove them); a
        # query-only read-write connection cleans up like the writer does.
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, isolation_level=None)
            try:
                db.execute("PRAGMA query_only=1")
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the WAL
                return db
            except sqlite3.Error:
                db.close()
                raise
        except sqlite3.Error:
            if os.access(db_path.parent, os.W_OK):
                raise  # writable storage: the file itself is bad; _check_version says so
        # Read-only storage: a WAL database cannot build its index of the -wal file here.
        # Without one (a run closed cleanly) the file is complete: read it as immutable;
        # with one (a killed run), read a copy of both so its last transactions count.
        wal = db_path.with_name(db_path.name + "-wal")
        if not (wal.is_file() and wal.stat().st_size > 0):
            db = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True,
                                 isolation_level=None)
        else:
            self._scratch = tempfile.TemporaryDirectory(prefix="epnas-readonly-")
            copy = Path(self._scratch.name) / DB_NAME
            shutil.copyfile(db_path, copy)
            shutil.copyfile(wal, copy.with_name(wal.name))
            db = sqlite3.connect(copy, isolation_level=None)
        db.execute("PRAGMA query_only=1")
        return db

    # --- lifecycle ---------------------------------------------------------------------

    def _check_version(self) -> int:
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise EpnasError(f"{self.run_dir / DB_NAME} is not a study database ({exc}); "
                             "choose another --out") from None
        self._version = version
        if version > SCHEMA_VERSION:
            raise EpnasError(f"{self.run_dir / DB_NAME} was written by a newer epnas (store "
                             f"schema {version}, this epnas reads {SCHEMA_VERSION}); upgrade "
                             "epnas to continue this run")
        return version

    def _create(self) -> None:
        if self.run_dir is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        with self._transaction():
            for old in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[old]:
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._version = SCHEMA_VERSION

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)

    def close(self, *, export: bool = True) -> None:
        """Export ``trials.csv`` (unless ``export`` is False), close, release the lock."""
        if self.db is None:
            return
        try:
            if export:
                self.export_csv()
        finally:
            self.db.close()
            self.db = None  # type: ignore[assignment]
            if self._scratch is not None:
                self._scratch.cleanup()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta ----------------------------------------------------------------------------

    def get_meta(self, name: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, values: Mapping[str, Any]) -> None:
        with self._transaction():
            self._put_meta(values)

    def _put_meta(self, values: Mapping[str, Any]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in values.items()])

    # --- batches and trials ----------------------------------------------------------

    def open_batch(self, batch: int, size: int, new: Sequence[NewTrial], *,
                   reset: Mapping[int, str] | None = None, drop: Iterable[int] = (),
                   detach: Iterable[int] = ()) -> list[int]:
        """Create (or, on resume, re-plan) batch ``batch`` in one transaction.

        Args:
            batch: the batch number; ``size`` the number of candidates asked for.
            new: rows to insert; returns their trial ids in order.
            reset: existing unfinished trials to set to a new status (``running`` to
                evaluate again, ``queued`` to wait on an identical candidate).
            drop: existing unfinished trials the strategy no longer asks for.
            detach: existing finished trials the strategy no longer asks for: kept, with
                no position in the batch.
        """
        now = time.time()
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO batches (id, size, start_time) "
                            "VALUES (?, ?, ?)", (batch, size, now))
            self.db.executemany("UPDATE trials SET status = ?, start_time = ? WHERE id = ?",
                                [(status, now, i) for i, status in (reset or {}).items()])
            self.db.executemany("UPDATE trials SET position = NULL WHERE id = ?",
                                [(i,) for i in detach])
            ids = []
            for row in new:
                c, r = row.candidate, row.result
                cur = self.db.execute(
                    "INSERT INTO trials (batch, position, key, fidelity, genome, info, status,"
                    " reason, error, metrics, reward, feasible, source, start_time, end_time)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (batch, row.position, c.key, c.fidelity, c.genome.to_json(),
                     json.dumps(dict(c.info)), row.status,
                     r and r.reason, r and r.error, r and json.dumps(dict(r.metrics)),
                     r and r.reward, r and r.feasible, row.source, now,
                     now if row.status in FINISHED else None))
                ids.append(cur.lastrowid)
            # after the inserts: SQLite gives new rows max(id) + 1, so deleting first
            # could hand a dropped trial's id (and its trials/<id>/) to another genome
            self.db.executemany("DELETE FROM trials WHERE id = ?", [(i,) for i in drop])
        return ids

    def finish(self, trial_id: int, result: Result, *, status: str | None = None,
               source: int | None = None, worker: str | None = None,
               start: float | None = None, end: float | None = None, retries: int = 0,
               lost: str | None = None) -> None:
        """Record the scored result of one trial (its own transaction); ``retries``: how
        often it ran again because its worker died, ``lost``: why the workers died."""
        with self._transaction():
            self.db.execute(
                "UPDATE trials SET status = ?, reason = ?, error = ?, metrics = ?, reward = ?,"
                " feasible = ?, source = ?, worker = ?, start_time = COALESCE(?, start_time),"
                " end_time = ?, retries = retries + ?, lost = COALESCE(?, lost)"
                " WHERE id = ?",
                (status or result.status, result.reason, result.error,
                 json.dumps(dict(result.metrics)), result.reward, result.feasible, source,
                 worker, start, end or time.time(), retries, lost, trial_id))

    def close_batch(self, batch: int, state: Mapping[str, Any] | None,
                    stats: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> None:
        """Close ``batch``, with the strategy checkpoint taken after it was told (if any)."""
        now = time.time()
        with self._transaction():
            self.db.execute("UPDATE batches SET closed = 1, end_time = ? WHERE id = ?",
                            (now, batch))
            if state is not None:
                self._put_checkpoint(batch, state)
            self.db.executemany("INSERT OR REPLACE INTO episodes (episode, stats) VALUES (?, ?)",
                                [(i, json.dumps(dict(s))) for i, s in enumerate(stats)])
            self._put_meta(meta)

    def save_checkpoint(self, batch: int, state: Mapping[str, Any],
                        meta: Mapping[str, Any] | None = None) -> None:
        """Checkpoint the strategy as it is after closed batch ``batch`` was told, with
        ``meta`` values that belong to it."""
        with self._transaction():
            self._put_checkpoint(batch, state)
            self._put_meta(meta or {})

    def _put_checkpoint(self, batch: int, state: Mapping[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        self.db.execute("INSERT OR REPLACE INTO checkpoint (id, batch, state, time) "
                        "VALUES (1, ?, ?, ?)", (batch, buffer.getvalue(), time.time()))

    def requeue_running(self) -> int:
        """Put ``running`` trials back to ``queued`` (a clean stop); how many."""
        with self._transaction():
            return self.db.execute("UPDATE trials SET status = 'queued', start_time = NULL "
                                   "WHERE status = 'running'").rowcount

    def checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """(last closed batch, strategy state) or None before the first batch closed."""
        row = self.db.execute("SELECT batch, state FROM checkpoint WHERE id = 1").fetchone()
        if row is None:
            return None
        return row[0], torch.load(io.BytesIO(row[1]), weights_only=True)

    def batches_after(self, batch: int) -> list[tuple[int, int, list[TrialRecord]]]:
        """(batch, size asked for, its trials by position) of every batch after ``batch``."""
        rows = self.db.execute("SELECT id, size FROM batches WHERE id > ? ORDER BY id",
                               (batch,)).fetchall()
        return [(b, size, self._select("WHERE batch = ? AND position IS NOT NULL "
                                       "ORDER BY position", (b,))) for b, size in rows]

    def next_batch(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM batches").fetchone()[0]

    def trials(self, status: str | Sequence[str] | None = None) -> list[TrialRecord]:
        """Every trial (or those with ``status``), by id."""
        if status is None:
            return self._select("ORDER BY id")
        statuses = [status] if isinstance(status, str) else list(status)
        marks = ",".join("?" * len(statuses))
        return self._select(f"WHERE status IN ({marks}) ORDER BY id", statuses)

    def trials_by_id(self, ids: Sequence[int]) -> list[TrialRecord]:
        marks = ",".join("?" * len(ids))
        return self._select(f"WHERE id IN ({marks}) ORDER BY id", ids)

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Trials by status."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status"))

    def episodes(self) -> list[dict[str, Any]]:
        return [json.loads(s) for (s,) in
                self.db.execute("SELECT stats FROM episodes ORDER BY episode")]

    _COLUMNS = ("id, batch, position, key, fidelity, genome, info, status, reason, error, "
                "metrics, reward, feasible, source, worker, start_time, end_time")

    def _select(self, where: str, params: Sequence[Any] = ()) -> list[TrialRecord]:
        # a store of schema 1 read as it is (status of an old run) has no retries yet
        extra = "retries, lost" if self._version >= 2 else "0, NULL"
        rows = self.db.execute(f"SELECT {self._COLUMNS}, {extra} FROM trials {where}", params)
        return [TrialRecord(id=r[0], batch=r[1], position=r[2], key=r[3], fidelity=r[4],
                            genome_json=r[5], info=json.loads(r[6]), status=r[7], reason=r[8],
                            error=r[9], metrics=json.loads(r[10]) if r[10] else {},
                            reward=r[11], feasible=None if r[12] is None else bool(r[12]),
                            source=r[13], worker=r[14], start_time=r[15], end_time=r[16],
                            retries=r[17], lost=r[18])
                for r in rows]

    # --- export --------------------------------------------------------------------------

    def export_csv(self, min_interval: float = 0.0) -> None:
        """Write ``trials.csv`` (atomically), at most every ``min_interval`` seconds."""
        if self.run_dir is None or self.readonly:
            return
        now = time.monotonic()
        if now - self._last_export < min_interval:
            return
        self._last_export = now
        write_csv(self.trials(), self.run_dir / CSV_NAME)


_FIRST_METRICS = ("accuracy", "params", "flops", "intensity")


def write_csv(trials: Sequence[TrialRecord], path: Path) -> None:
    """``trials.csv``: one row per trial, metrics as fractions, plus ``accuracy_pct``."""
    metrics = sorted({m for t in trials for m in t.metrics} - set(_FIRST_METRICS))
    header = ["trial_id", "batch", "key", "fidelity", "status", "reason", *_FIRST_METRICS,
              "accuracy_pct", *metrics, "reward", "feasible", "source", "worker", "retries",
              "lost", "start_time", "end_time", "error", "info", "genome"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for t in trials:
            acc = t.accuracy
            writer.writerow([
                t.id, t.batch, t.key, t.fidelity or "", t.status, t.reason or "",
                *(_cell(t.metrics.get(m)) for m in _FIRST_METRICS),
                "" if acc is None else f"{100 * acc:.2f}",
                *(_cell(t.metrics.get(m)) for m in metrics),
                _cell(t.reward), "" if t.feasible is None else int(t.feasible),
                t.source or "", t.worker or "", t.retries, t.lost or "",
                _cell(t.start_time), _cell(t.end_time),
                t.error or "", json.dumps(dict(t.info)), t.genome_json])
    os.replace(tmp, path)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.owner = True
        else:
            self.owner = False

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.owner:
            return
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
