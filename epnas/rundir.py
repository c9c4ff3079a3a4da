"""The run directory's lifecycle, outside the search loop.

:func:`open_store` creates ``RUN_DIR`` (or opens the run in it, refusing one of another
configuration), moves an old run aside for ``--force-new``, and writes ``config.yaml``
and ``env.json``; :func:`seed_genomes` reads the genomes ``--init-from`` starts from. The
files a trial writes are :mod:`epnas.trialfiles`'.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epnas._version import __version__
from epnas.config import StudyConfig
from epnas.errors import EpnasError
from epnas.executors import Executor, available_cores
from epnas.store import CSV_NAME, DB_NAME, RunLock, Store, TrialRecord
from epnas.trialfiles import TRIALS_DIR, WEIGHTS_DIR

CONFIG_FILE = "config.yaml"  # the effective config, as --print-config shows it
ENV_FILE = "env.json"  # versions and hardware of the last session
# store meta: the trial budget a resume gave explicitly (epnas resume RUN --trials N); the
# strategy's own schedule is extended to it, on every later resume too
EXTENDED_TO = "extended_to"
INIT_GENOMES = 8  # best genomes of another run that --init-from starts from (EPNAS's top-k)


def open_store(config: StudyConfig, force_new: bool) -> Store:
    """The store of ``config.out`` (in memory when None), checked against ``config``.

    Raises:
        EpnasError: ``out`` cannot be created, is locked by another process, or holds a
            run of another configuration (only the budgets and executor settings may
            change on resume) or of an unreadable one; nothing in it is then changed.
    """
    if config.out is None:
        store = Store(None)
        store.set_meta({"config": config.model_dump(mode="json"), "created": time.time(),
                        "elapsed": 0.0})
        return store
    run_dir = Path(config.out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EpnasError(f"cannot create run directory {run_dir}: {exc.strerror}; choose "
                         "another --out") from None
    store = _start_over(run_dir) if force_new else Store(run_dir)
    try:
        stored = store.get_meta("config")
        if stored is not None:
            try:
                previous = StudyConfig.parse(stored)
            except EpnasError as exc:
                raise EpnasError(f"{run_dir} holds a study this epnas cannot read ({exc}); "
                                 "use --force-new to start over there") from None
            diffs = config.differences(previous)
            if diffs:
                raise EpnasError(f"{run_dir} holds a run with another configuration ("
                                 f"{'; '.join(diffs)}, here vs there); only the budgets "
                                 "and executor settings (trials, time, workers, ray, "
                                 "trial_timeout, max_consecutive_failures, elastic_threads) "
                                 "may change on resume: repeat its settings, run `epnas resume "
                                 f"{run_dir}`, or add --force-new to start over")
    except BaseException:
        store.close(export=False)
        raise
    new = {"created": time.time(), "epnas": __version__, "elapsed": 0.0} if stored is None else {}
    save_config(store, config, new)
    write_environment(run_dir, config)
    return store


def save_config(store: Store, config: StudyConfig, meta: Mapping[str, Any] | None = None) -> None:
    """Record ``config`` as the run's config, with other ``meta`` data in the same
    transaction, and write ``config.yaml`` in its directory."""
    store.set_meta({**(meta or {}), "config": config.model_dump(mode="json")})
    if store.run_dir is not None:
        (store.run_dir / CONFIG_FILE).write_text(config.to_yaml())


def _start_over(run_dir: Path) -> Store:
    """A fresh store in ``run_dir``; an old run's files move to ``replaced-<time>/``."""
    lock = RunLock(run_dir)
    try:
        names = [n for n in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", CSV_NAME,
                             CONFIG_FILE, ENV_FILE, TRIALS_DIR, WEIGHTS_DIR)
                 if (run_dir / n).exists()]
        if names:
            archive = run_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
            archive.mkdir()
            for name in names:
                shutil.move(run_dir / name, archive / name)
    except BaseException:
        lock.release()
        raise
    return Store(run_dir, lock=lock)


def environment(config: StudyConfig, executor: Executor | None = None) -> dict[str, Any]:
    """Versions and hardware of this session, for ``env.json``.

    ``torch_threads`` is this (the Study's) process; ``executor`` says how trials run:
    its kind, workers, torch threads per trial and GPU per worker (Ray: its version,
    address and cluster resources).
    """
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"epnas": __version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor() or None,
            "cpus": available_cores(), "torch_threads": torch.get_num_threads(),
            "workers": config.workers, "cuda_devices": cuda,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "executor": None if executor is None else executor.describe(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_environment(run_dir: Path, config: StudyConfig,
                      executor: Executor | None = None) -> None:
    """Write ``env.json`` (again once the executor has started, to record it)."""
    (run_dir / ENV_FILE).write_text(json.dumps(environment(config, executor), indent=2) + "\n")


def best_genomes(run_dir: str | Path, k: int = INIT_GENOMES) -> list[TrialRecord]:
    """The ``k`` best distinct finished trials of a stored run: feasible first, then by
    reward (what ``--init-from`` starts from)."""
    try:
        with Store(run_dir, readonly=True) as store:
            ok = [t for t in store.trials(("done", "cached")) if t.accuracy is not None]
    except EpnasError as exc:
        raise EpnasError(f"--init-from {run_dir}: {exc}") from None
    best: dict[str, TrialRecord] = {}
    for t in sorted(ok, key=lambda t: (bool(t.feasible), t.rank), reverse=True):
        best.setdefault(t.key, t)
    if not best:
        raise EpnasError(f"--init-from {run_dir}: the run has no finished trial to start from")
    return list(best.values())[:k]


def seed_genomes(config: StudyConfig, force_new: bool) -> list[str] | None:
    """Genome JSON a new run with ``init_from`` starts from; None when there is no
    ``init_from`` or the run in ``config.out`` already recorded its seeds (resume)."""
    if config.init_from is None:
        return None
    if config.out is not None and not force_new and (Path(config.out) / DB_NAME).is_file():
        with Store(config.out, readonly=True) as store:
            if store.get_meta("init_genomes") is not None:
                return None
    return [t.genome_json for t in best_genomes(config.init_from)]
