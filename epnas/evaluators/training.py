"""Real training: build the genome, train it on a data set, measure validation accuracy.

Fidelities are the trainer's schedules, ``prediction`` (the short, large-batch
performance-prediction schedule, the default during search) and ``full``, and any
EcoNAS reduced setting such as ``c=0.25,r=0.5,s=0.5,e=5`` (:mod:`epnas.evaluators.proxy`),
and the label-free pretext tasks of UnNAS such as ``pretext=rotation``
(:mod:`epnas.data.pretext`): the genome's network is built with the task's classes (its
body is the searched one, its classifier the task's), trained on the task's inputs and
labels, and its ``accuracy`` is the task's. A data set without labels (an image folder
without class directories) trains only under pretext fidelities.
Costs come from the analytic cost model for the data set's input shape, its classes
(one for data without labels) and the searched (unreduced) genome, not from training.

In a study every trained candidate is warm-started from the parameter-sharing
dictionary's snapshot of the current step (``share=True``, :mod:`epnas.train.sharing`)
and leaves its trained weights in its trial directory as ``model.pt``: the
``state_dict`` of ``epnas.build(genome, input_shape, num_classes)``, read back with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from epnas.data import Dataset, load, locate, pretext
from epnas.errors import EpnasError, validation_message
from epnas.evaluators.base import Evaluator
from epnas.evaluators.latency import genome_latency
from epnas.evaluators.proxy import Setting, reduce_data
from epnas.spaces.genome import Genome
from epnas.spaces.registry import build, cost
from epnas.train import TrainResult, schedules, train
from epnas.train.graphs import GRAPH_MODES
from epnas.train.sharing import UnitState, save_atomic, snapshot, unit_states
from epnas.train.trainer import Criterion
from epnas.trial import Candidate, Result, TrialContext

MODEL_FILE = "model.pt"
"""A trial's trained weights, in its trial directory."""

SHARED_FIDELITIES = ("prediction", "full")
WARM_LOSS_FACTOR = 2.0  # a warm start whose first loss exceeds the fresh one's this much
#                         trains from its fresh initialisation instead
"""Fidelities that train the genome's own full-width network: only these are
warm-started and merged into the dictionary (a reduced-setting proxy trains a
narrower network and measures what that setting ranks)."""


def build_seeded(genome: Genome, data: Dataset, seed: int) -> torch.nn.Module:
    """The network of ``genome`` for ``data``, its initial weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(genome, data.input_shape, data.num_classes)


def starts_worse(warm: torch.nn.Module, fresh: torch.nn.Module, data: Dataset,
                 images: int = 256) -> bool:
    """Whether inherited weights start a network off worse than its fresh initialisation:
    its cross-entropy on the first ``images`` training images (in training mode; ``warm``
    on a copy, so its BatchNorm statistics stay untouched, ``fresh`` as it is, a network
    made for the comparison) is not finite or above :data:`WARM_LOSS_FACTOR` times the
    fresh network's. Weights that a failed training blew up give losses in the hundreds
    where a fresh network gives about ln(classes)."""
    x = data.normalised(data.train_x[:images])
    y = data.train_y[:images]
    losses = []
    for probe in (copy.deepcopy(warm).train(), fresh.train()):
        with torch.no_grad():
            out = probe(x)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        losses.append(float(F.cross_entropy(out.float(), y)))
    return not math.isfinite(losses[0]) or losses[0] > WARM_LOSS_FACTOR * losses[1]


def train_genome(genome: Genome, data: Dataset, schedule: schedules.Schedule, *, seed: int = 0,
                 device: str | None = None, time_limit: float | None = None,
                 evaluate_test: bool = False, progress: Any = None) -> TrainResult:
    """Build ``genome`` for ``data`` (weights seeded by ``seed``) and train it."""
    return train(build_seeded(genome, data, seed), data, schedule, seed=seed, device=device,
                 time_limit=time_limit, evaluate_test=evaluate_test, progress=progress)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s state_dict (contiguous CPU tensors) to ``path`` atomically."""
    save_atomic({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()},
                path)


class TrainingEvaluator(Evaluator):
    """Trains every candidate on a real data set (validation accuracy is searched).

    Args:
        dataset: data set name (``epnas.data.names()``; ``digits`` is embedded) or a
            :class:`~epnas.data.Dataset` (e.g. from ``epnas.data.from_tensors``).
        data: where its files are (None: the data set's default places).
        seed: seeds weight initialisation, shuffling and augmentation.
        schedule: overrides of the schedule fields (``epochs``, ``batch_size``, ...) for
            every fidelity.
        time_limit: seconds of training per candidate before it is stopped and failed
            with reason ``timeout``.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (None: CUDA when available).
        val_fraction: share of the training set held out for validation.
        latency: also measure ``latency``, the median milliseconds of a forward pass
            at batch 1 on ``device`` (:mod:`epnas.evaluators.latency`), so that a
            constraint such as ``latency::2`` (at most 2 ms) can use it.
        max_memory: bytes; a candidate whose estimated training memory (the cost
            model's ``memory`` at the schedule's batch size) is above it fails with
            reason ``oom`` without being built or trained (``--max-memory``).
        share: in a study, warm-start each candidate from the parameter-sharing
            dictionary and add its trained weights to it (``prediction`` and ``full``
            trials; trained weights are saved to the trial directory either way).
        cuda_graphs: how the trainer runs its steps on CUDA (:func:`epnas.train.train`):
            ``off`` (eager, the default until measured on a GPU), ``on``/``auto`` (the
            step captured in a CUDA graph, eager fallback), ``compile``.
    """

    # The named fidelities; any reduced-setting or pretext string (epnas.evaluators.proxy)
    # works too.
    fidelities: ClassVar[tuple[str, ...]] = ("prediction", "full")
    default_fidelity: ClassVar[str | None] = "prediction"

    def __init__(self, dataset: str | Dataset = "digits", data: str | None = None, seed: int = 0,
                 schedule: dict[str, Any] | None = None, time_limit: float | None = None,
                 device: str | None = None, val_fraction: float = 0.1,
                 latency: bool = False, max_memory: float | None = None,
                 share: bool = True, cuda_graphs: str = "off") -> None:
        if cuda_graphs not in GRAPH_MODES:
            raise EpnasError(f"cuda_graphs must be one of {', '.join(GRAPH_MODES)}, "
                             f"got {cuda_graphs!r}")
        self.cuda_graphs = cuda_graphs
        self._data: Dataset | None = dataset if isinstance(dataset, Dataset) else None
        self.given_data = self._data  # a data set passed in (not loaded by name)
        self.dataset = dataset.name if isinstance(dataset, Dataset) else dataset
        self.data, self.seed = data, seed
        self.shares_weights = share
        self.overrides = dict(schedule or {})
        self.time_limit, self.device, self.val_fraction = time_limit, device, val_fraction
        self.latency = latency
        self.max_memory = max_memory
        # what TrainResult.metrics reports, and the latency when it is measured
        self.metrics = ("accuracy", "loss", "val_loss", "epochs", "train_seconds",
                        "images_per_second", *(("latency",) if latency else ()))
        self._prepared: dict[tuple[Any, ...], tuple[Dataset, pretext.Pretext | None]] = {}
        for name in self.fidelities:  # bad overrides fail now, not in every trial
            self.schedule(name, self._data or dataset)
        if self._data is None:  # so does missing data (found here, loaded in the workers)
            locate(self.dataset, data)

    def schedule(self, fidelity: str, dataset: Any = None) -> schedules.Schedule:
        """The schedule a fidelity trains with on ``dataset`` (default: this data set).

        Raises:
            EpnasError: The fidelity or a schedule override is invalid.
        """
        setting = Setting.parse(fidelity)
        try:
            return setting.schedule(dataset or self.dataset, self.overrides)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise EpnasError(validation_message("schedule options", exc)) from None

    def check_fidelity(self, fidelity: str) -> None:
        """Named fidelities, reduced-setting strings (``c=0.25,r=0.5,s=0.5,e=5``) and
        pretext tasks (``pretext=rotation``); a pretext task must fit the images and a
        supervised fidelity needs labels (this loads the data set)."""
        self.schedule(fidelity, self._data or self.dataset)
        setting = Setting.parse(fidelity)
        if setting.pretext is not None:
            self.prepared(setting)
        elif not self.loaded.classes:
            self._require_labels(setting)

    def prepare(self) -> None:
        """Load the data set: an unreadable image or a single class is reported before
        the first trial (and workers then read the data set's cache)."""
        _ = self.loaded

    @property
    def loaded(self) -> Dataset:
        """The data set, loaded on first use (once per worker process)."""
        if self._data is None:
            self._data = load(self.dataset, self.data, val_fraction=self.val_fraction)
        return self._data

    def costs(self, genome: Genome) -> dict[str, float]:
        data = self.loaded
        batch = self.schedule(self.default_fidelity or "prediction", data).batch_size
        return cost(genome, data.input_shape, max(data.num_classes, 1)).as_dict(batch)

    def trial_memory(self, genome: Genome) -> float:
        """The cost model's training memory at the search schedule's batch size."""
        return self.costs(genome)["memory"]

    def prepared(self, setting: Setting) -> tuple[Dataset, pretext.Pretext | None]:
        """The data set a setting trains on (at its resolution and sample ratio; for a
        pretext task without labels, its validation and test sets the task's) and its
        pretext task (None: the labels). Kept for reuse.

        Raises:
            EpnasError: a supervised setting on data without labels, or a pretext task
                that does not fit the images.
        """
        key = (setting.r, setting.s, setting.pretext, setting.grid, setting.perms, setting.bins)
        if key not in self._prepared:
            data, task = self.loaded, None
            if setting.pretext is None:
                self._require_labels(setting)
            data = reduce_data(data, setting, self.seed)
            if setting.pretext is not None:
                task = pretext.make(setting.pretext, data.input_shape, grid=setting.grid,
                                    perms=setting.perms, bins=setting.bins)
                data = pretext.pretext_data(data, task)
            self._prepared[key] = (data, task)
        return self._prepared[key]

    def reduced(self, setting: Setting) -> Dataset:
        """The data set a setting trains on (:meth:`prepared` without the task)."""
        return self.prepared(setting)[0]

    def _require_labels(self, setting: Setting) -> None:
        if not self.loaded.classes:
            raise EpnasError(f"fidelity {str(setting)!r} trains on labels, and the data set "
                             f"{self.loaded.name!r} has none (a folder without class "
                             "directories): use a pretext fidelity, e.g. "
                             "--fidelity pretext=rotation")

    def evaluate(self, candidate: Candidate) -> Result:
        return self.evaluate_trial(candidate, TrialContext())

    def evaluate_trial(self, candidate: Candidate, context: TrialContext, *,
                       init: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                       criterion: Criterion | None = None) -> Result:
        """Train ``candidate``; ``init`` (the seeded network -> metrics) sets its starting
        weights and ``criterion`` replaces the training loss (:func:`epnas.train.train`):
        the ``distill`` evaluator's end-to-end trial passes both."""
        try:
            setting = Setting.parse(candidate.fidelity or self.default_fidelity)
            data, task = self.prepared(setting)
        except EpnasError as exc:
            return Result.failure("error", str(exc))
        fidelity = str(setting)
        schedule = self.schedule(fidelity, data)
        # constraints apply to the searched network, whatever setting ranks it
        costs = cost(candidate.genome, self.loaded.input_shape,
                     max(self.loaded.num_classes, 1)).as_dict(schedule.batch_size)
        if self.max_memory is not None and costs["memory"] > self.max_memory:
            return Result.failure("oom", f"estimated training memory {costs['memory']:.4g} "
                                         f"bytes at batch size {schedule.batch_size} is above "
                                         f"max_memory {self.max_memory:.4g}; not trained",
                                  costs)
        if self.latency:
            costs["latency"] = genome_latency(candidate.genome, self.loaded.input_shape,
                                              data.num_classes, device=self.device)
        genome = setting.genome(candidate.genome)
        model = build_seeded(genome, data, self.seed)
        warm: dict[str, float] = {}
        if self.shares_weights and context.weights and fidelity in SHARED_FIDELITIES:
            stats = snapshot(context.weights).load_into(genome, model)
            total = stats.exact + stats.resized + stats.missing
            shared = stats.exact + stats.resized
            if shared and task is None and starts_worse(
                    model, build_seeded(genome, data, self.seed), data):
                model, shared = build_seeded(genome, data, self.seed), 0
                warm["warm_rejected"] = 1.0
            warm["warm_start"] = shared / max(total, 1)
        if init is not None:
            warm.update(init(model))
        try:
            run = train(model, data, schedule, seed=self.seed, device=self.device,
                        time_limit=self.time_limit, task=task, cuda_graphs=self.cuda_graphs,
                        criterion=criterion,
                        progress=lambda epoch, figures: context.report(
                            epoch, schedule.train_epochs, figures))
        except torch.OutOfMemoryError as exc:
            return Result.failure("oom", str(exc).splitlines()[0], costs)
        metrics = {**costs, **warm, **run.metrics()}
        if setting.reduced:  # reduced network or data
            metrics["proxy_flops"] = cost(genome, data.input_shape, data.num_classes).flops
        if run.status == "diverged" or not math.isfinite(run.accuracy):
            return Result.failure("diverged", f"loss became {run.loss} in epoch "
                                              f"{run.epochs + 1}", metrics)
        if run.status == "timeout":
            return Result.failure("timeout", f"training passed time_limit={self.time_limit}s "
                                             f"after {run.epochs} epochs", metrics)
        if context.directory and fidelity in SHARED_FIDELITIES:
            save_weights(model, Path(context.directory) / MODEL_FILE)
        return Result("done", metrics)

    def shared_units(self, candidate: Candidate, directory: Path) -> dict[str, UnitState] | None:
        path = Path(directory) / MODEL_FILE
        if not (self.shares_weights and candidate.fidelity in SHARED_FIDELITIES
                and path.is_file()):
            return None
        model = build(candidate.genome, self.loaded.input_shape, self.loaded.num_classes)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return unit_states(candidate.genome, model)
