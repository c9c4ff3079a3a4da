"""Reading a finished (or running) run directory from Python: :func:`load_run`.

A :class:`Run` is a snapshot: the trials are read once from ``study.db`` (without the
lock, so a running search is not disturbed) and the database is closed again. Trained
weights live next to it: ``trials/<id>/model.pt`` for trials of a search that saved
them, ``final/`` for the architecture ``epnas retrain`` trained on train+validation.

Example::

    run = epnas.load_run("runs/small")
    best = run.best()
    model = run.build(best.id)          # trained weights loaded when the run has them
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from epnas.config import StudyConfig
from epnas.errors import EpnasError
from epnas.evaluators import EVALUATORS
from epnas.evaluators.training import MODEL_FILE
from epnas.spaces.genome import Genome
from epnas.spaces.registry import build
from epnas.store import Store, TrialRecord
from epnas.study import reported
from epnas.trialfiles import TRIALS_DIR

if TYPE_CHECKING:
    import pandas

    from epnas.data import Dataset

WEIGHTS_NAME = MODEL_FILE  # a trial's trained state_dict, torch.save'd
FINAL_DIR = "final"
FINAL_WEIGHTS = "model.pt"
FINAL_METRICS = "metrics.json"  # written last by retraining: its presence means complete


def trial_weights_path(run_dir: str | Path, trial_id: int) -> Path:
    """Where a search keeps the trained weights of trial ``trial_id``."""
    return Path(run_dir) / TRIALS_DIR / str(trial_id) / WEIGHTS_NAME


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, read without unpickling code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or foreign files
        raise EpnasError(f"cannot read weights {path}: {exc}".splitlines()[0]) from None


class Trials(list[TrialRecord]):
    """The trials of a run, by id; :meth:`to_pandas` gives a table."""

    def to_pandas(self) -> pandas.DataFrame:
        """One row per trial: id, status, accuracy, every metric, reward, feasible, genome.

        Raises:
            ImportError: pandas is not installed.
        """
        import pandas as pd

        rows = []
        for t in self:
            rows.append({"trial": t.id, "status": t.status, "reason": t.reason,
                         "fidelity": t.fidelity, "key": t.key, **dict(t.metrics),
                         "reward": t.reward, "feasible": t.feasible, "source": t.source,
                         "start_time": t.start_time, "end_time": t.end_time,
                         "genome": t.genome_json})
        return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame(rows)


class Run:
    """A run directory, read once.

    Args:
        run_dir: a directory written by ``epnas search`` or ``Study(out=...)``.

    Attributes:
        path: the run directory.
        config: the study's effective :class:`~epnas.config.StudyConfig`.
        trials: every trial, by id (:class:`Trials`).

    Raises:
        EpnasError: ``run_dir`` holds no readable study.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir)
        with Store(self.path, readonly=True) as store:
            stored = store.get_meta("config")
            if stored is None:
                raise EpnasError(f"{self.path} holds no study configuration")
            self.config = StudyConfig.parse(stored)
            self.trials = Trials(store.trials())
            self.report_fidelity: str | None = store.get_meta("report_fidelity")
        self._by_id = {t.id: t for t in self.trials}

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, space={self.config.space!r}, "
                f"strategy={self.config.strategy!r}, trials={len(self.trials)})")

    # --- trials ------------------------------------------------------------------------

    def trial(self, trial_id: int) -> TrialRecord:
        """The trial with id ``trial_id``.

        Raises:
            EpnasError: the run has no such trial.
        """
        try:
            return self._by_id[trial_id]
        except KeyError:
            raise EpnasError(f"{self.path} has no trial {trial_id} (it has "
                             f"{len(self.trials)} trials, ids 1..{len(self.trials)})") from None

    def best(self, feasible: bool = True) -> TrialRecord | None:
        """The finished trial with the highest reward (ties: the lower validation loss,
        then the earliest: :attr:`~epnas.store.TrialRecord.rank`); for a
        strategy with a ``report_fidelity`` (EcoNAS), among the trials at that fidelity.

        Args:
            feasible: only trials meeting every constraint (the run's reported best).
                False: any finished trial, so the least penalised one wins.

        Returns:
            The trial, or None when no (feasible) trial finished with an accuracy.
        """
        ok = [t for t in reported(self.trials, self.report_fidelity)
              if math.isfinite(t.reward or 0.0) and (t.feasible or not feasible)]
        return max(ok, key=lambda t: t.rank, default=None)

    def genome(self, trial_id: int | None = None) -> Genome:
        """The genome of a trial (None: of :meth:`best`)."""
        return self._pick(trial_id).genome

    # --- data set and shapes ---------------------------------------------------------

    @property
    def dataset(self) -> str | None:
        """The data set the search trained on (None for evaluators without one, e.g. the
        NAS-Bench-201 table)."""
        return (self.config.dataset or self._evaluator_setting("dataset")
                or self.supernet.get("dataset"))

    @cached_property
    def supernet(self) -> dict[str, Any]:
        """The description (``supernet.json``) of the supernet a ``supernet`` evaluator's
        run searched; empty for other runs."""
        from epnas.supernet.training import read_meta

        path = self._evaluator_setting("path")
        return read_meta(path) if self.config.evaluator == "supernet" and path else {}

    @cached_property
    def data(self) -> Dataset:
        """The search's data set, split as the search split it (same validation share and
        seed), so its ``mean``/``std`` are the normalisation the weights were trained with.

        Raises:
            EpnasError: the run's evaluator has no data set, or its files are missing.
        """
        from epnas.data import load

        if self.dataset is None:
            raise EpnasError(f"the run in {self.path} used the {self.config.evaluator} "
                             "evaluator, which trains on no data set; name one with --dataset")
        val_fraction = self._evaluator_setting("val_fraction")
        kwargs = {} if val_fraction is None else {"val_fraction": val_fraction}
        root = self.config.data or self._evaluator_setting("data") or self.supernet.get("data")
        return load(self.dataset, root, **kwargs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the run's networks take."""
        if self.dataset is None:
            return tuple(self._evaluator_setting("input_shape") or (3, 32, 32))  # type: ignore[return-value]
        return self.data.input_shape

    @property
    def num_classes(self) -> int:
        if self.dataset is None:
            return int(self._evaluator_setting("num_classes") or 10)
        return self.data.num_classes

    def _evaluator_setting(self, name: str) -> Any:
        """An evaluator option of the run: as configured, else the evaluator's default."""
        if name in self.config.evaluator_options:
            return self.config.evaluator_options[name]
        try:
            _, cls = EVALUATORS.resolve(self.config.evaluator or "training")
        except EpnasError:
            return None
        parameter = inspect.signature(cls).parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return None
        return parameter.default

    # --- weights and models ----------------------------------------------------------

    @property
    def final(self) -> dict[str, Any] | None:
        """``final/metrics.json`` of a completed ``epnas retrain`` (None when there is none)."""
        path = self.path / FINAL_DIR / FINAL_METRICS
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EpnasError(f"cannot read {path}: {exc}") from None

    def weights(self, trial_id: int | None = None) -> Path | None:
        """The best trained weights of a trial (None: of :meth:`best`): ``final/model.pt``
        when it is the retrained trial, else ``trials/<id>/model.pt`` (that of the trial a
        ``cached`` repeat reused); None when the run kept none."""
        trial = self._pick(trial_id)
        final = self.final
        if final is not None and final.get("trial") == trial.id:
            return self.path / FINAL_DIR / FINAL_WEIGHTS
        for tid in _chain(trial):
            path = trial_weights_path(self.path, tid)
            if path.is_file():
                return path
        return None

    def build(self, trial_id: int | None = None, *, weights: bool = True) -> nn.Module:
        """The torch module of a trial (None: of :meth:`best`), in eval mode.

        Args:
            trial_id: the trial.
            weights: load the trained weights (see :meth:`weights`) when the run has them;
                False: freshly initialised.
        """
        trial = self._pick(trial_id)
        meta = self.metadata(trial.id)  # final/ may have been trained on another data set
        model = build(trial.genome, tuple(meta["input_shape"]), meta["num_classes"])
        path = self.weights(trial.id) if weights else None
        if path is not None:
            try:
                model.load_state_dict(load_state(path))
            except RuntimeError as exc:
                raise EpnasError(f"weights {path} do not fit trial {trial.id}'s network: "
                                 f"{str(exc).splitlines()[0]}") from None
        return model.eval()

    def metadata(self, trial_id: int | None = None) -> dict[str, Any]:
        """What a deployer of a trial's network (None: of :meth:`best`) needs: ``trial``,
        ``key``, ``space``, ``dataset``, ``input_shape``, ``num_classes``, ``classes``,
        and the per-channel ``mean``/``std`` of [0, 1]-scaled pixels the inputs are
        normalised with (zeros and ones for runs trained on no data set)."""
        trial = self._pick(trial_id)
        final = self.final
        if final is not None and final.get("trial") == trial.id:
            shape, classes = tuple(final["input_shape"]), list(final["classes"])
            mean, std, dataset = list(final["mean"]), list(final["std"]), final["dataset"]
        elif self.dataset is not None:
            data = self.data
            shape, classes, dataset = data.input_shape, list(data.classes), data.name
            mean, std = list(data.mean), list(data.std)
        else:
            shape, dataset = self.input_shape, None
            classes = [str(i) for i in range(self.num_classes)]
            mean, std = [0.0] * shape[0], [1.0] * shape[0]
        return {"trial": trial.id, "key": trial.key, "space": trial.genome.space,
                "dataset": dataset, "input_shape": list(shape), "num_classes": len(classes),
                "classes": classes, "mean": mean, "std": std}

    def early_exit(self, trial_id: int | None = None) -> dict[str, Any]:
        """The early-exit rule a multi-exit trial (None: :meth:`best`) was measured with:
        ``criterion`` and ``thresholds`` (one per exit but the last, as the ``supernet``
        evaluator chose them); empty for trials measured without one."""
        metrics = self._pick(trial_id).metrics
        exits = sum(1 for name in metrics if re.fullmatch(r"exit\d+_flops", name))
        if exits == 0 or any(f"threshold{k}" not in metrics for k in range(exits - 1)):
            return {}
        return {"criterion": self._evaluator_setting("criterion") or "max_softmax",
                "thresholds": [float(metrics[f"threshold{k}"]) for k in range(exits - 1)]}

    def _pick(self, trial_id: int | None) -> TrialRecord:
        if trial_id is not None:
            return self.trial(trial_id)
        best = self.best()
        if best is None:
            raise EpnasError(f"{self.path} has no feasible finished trial yet; choose one "
                             "by id (epnas status lists them)")
        return best


def _chain(trial: TrialRecord) -> Iterable[int]:
    """The trial, then the trial its cached result came from."""
    yield trial.id
    if trial.source is not None:
        yield trial.source


def load_run(run_dir: str | Path) -> Run:
    """Open a run directory for reading: trials, the best one, genomes, trained models.

    Raises:
        EpnasError: ``run_dir`` holds no study.
    """
    return Run(run_dir)


def add_trial_arguments(parser: argparse.ArgumentParser) -> None:
    """``RUN_DIR`` and the choice of its trial (``--trial ID`` or ``--best``, the default)
    for the commands that take one trained network of a run."""
    parser.add_argument("run_dir", metavar="RUN_DIR")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, metavar="ID", help="trial id (epnas status)")
    which.add_argument("--best", action="store_true",
                       help="the best feasible trial (the default)")
