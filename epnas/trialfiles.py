"""A study's files per trial: ``RUN_DIR/trials/<id>/`` and the weight-sharing snapshots.

With an evaluator that shares weights (the training evaluator), each trial gets
``RUN_DIR/trials/<id>/`` for its trained weights and the snapshot of the
parameter-sharing dictionary of the current step (:mod:`epnas.train.sharing`). Before a
batch is closed its ``done`` trials are merged into the dictionary and saved as the
step's snapshot in ``RUN_DIR/weights/``; the Study records which snapshot goes with each
strategy checkpoint (:meth:`TrialFiles.checkpoint_meta`) in the same transaction, so a
resume restores both and the replayed batches rebuild the later snapshots: a replayed
trial warm-starts from the same weights as the first time. In-memory studies keep these
files in a temporary directory removed by :meth:`TrialFiles.close`. A ``cached`` trial's
directory holds hard links to its source trial's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from epnas.evaluators import Evaluator
from epnas.train.sharing import SharedWeights
from epnas.trial import Candidate, Result, TrialContext

TRIALS_DIR = "trials"  # RUN_DIR/trials/<id>/: a trial's files (trained weights)
WEIGHTS_DIR = "weights"  # RUN_DIR/weights/: the parameter-sharing dictionary's snapshots
CHECKPOINT_WEIGHTS = "checkpoint_weights"  # store meta: the snapshot of the last checkpoint


class TrialFiles:
    """Trial directories and the sharing dictionary of one study.

    Args:
        run_dir: the run directory; None for an in-memory study, whose trials get a
            temporary directory only when they share weights (workers read snapshots
            from files and write weights to files).
        shares_weights: whether the evaluator's trials feed a sharing dictionary.
    """

    def __init__(self, run_dir: Path | None, shares_weights: bool) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if run_dir is None and shares_weights:
            self._scratch = tempfile.TemporaryDirectory(prefix="epnas-study-")
            run_dir = Path(self._scratch.name)
        self.root = run_dir
        self.sharing = (SharedWeights(run_dir / WEIGHTS_DIR)
                        if run_dir is not None and shares_weights else None)
        self._checkpoint_weights: int | None = None  # the snapshot of the last checkpoint

    def trial_dir(self, trial_id: int) -> Path:
        assert self.root is not None
        return self.root / TRIALS_DIR / str(trial_id)

    def context(self, trial_id: int) -> TrialContext:
        """Where trial ``trial_id`` writes its files and reads the current snapshot."""
        if self.root is None:
            return TrialContext()
        snapshot = self.sharing.snapshot if self.sharing is not None else None
        return TrialContext(str(self.trial_dir(trial_id)),
                            None if snapshot is None else str(snapshot))

    def link(self, trial_id: int, source: int) -> None:
        """Give a cached trial its source trial's files (hard links, else copies)."""
        if self.root is None or not self.trial_dir(source).is_dir():
            return
        target = self.trial_dir(trial_id)
        target.mkdir(parents=True, exist_ok=True)
        for path in self.trial_dir(source).iterdir():
            link = target / path.name
            if path.name.startswith(".") or not path.is_file() or link.exists():
                continue
            try:
                os.link(path, link)
            except OSError:  # a file system without hard links
                shutil.copyfile(path, link)

    def merge(self, batch: int, evaluator: Evaluator,
              trials: Iterable[tuple[int, Candidate, Result | None]]) -> None:
        """Merge the weights of a batch's ``done`` trials (id, candidate, result) into the
        sharing dictionary and save them as the snapshot of step ``batch``."""
        if self.sharing is None:
            return
        models = []
        for trial_id, candidate, result in trials:
            if result is not None and result.status == "done":
                units = evaluator.shared_units(candidate, self.trial_dir(trial_id))
                if units is not None:
                    models.append((result.accuracy, units))
        self.sharing.merge(batch, models)

    def restore(self, version: int | None) -> None:
        """Go back to the snapshot a checkpoint recorded under :data:`CHECKPOINT_WEIGHTS`
        (None: no checkpoint, the empty dictionary)."""
        if self.sharing is not None:
            self.sharing.restore(version)
            self._checkpoint_weights = self.sharing.version

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint records of the sharing dictionary: its snapshot's step."""
        return {} if self.sharing is None else {CHECKPOINT_WEIGHTS: self.sharing.version}

    def checkpointed(self) -> None:
        """The current snapshot is the checkpoint's from now on."""
        if self.sharing is not None:
            self._checkpoint_weights = self.sharing.version
        self.prune()

    def prune(self) -> None:
        """Keep the snapshots a resume (the checkpoint's) and the next step need."""
        if self.sharing is not None:
            self.sharing.prune([self._checkpoint_weights])

    def close(self) -> None:
        """Remove an in-memory study's temporary directory."""
        if self._scratch is not None:
            self._scratch.cleanup()
