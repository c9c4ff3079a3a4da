"""Block-wise distillation (DNA): rate one block's candidate by how well it reproduces a
teacher's features.

A candidate at fidelity ``block=K`` is a *part* (the genome of block K, see the block
hooks of :class:`~epnas.spaces.base.Space`). Its block is built on the teacher's
features at the start of block K (the normalised images for block 0) and trained for
``epochs`` with Adam to output the teacher's features at the end of block K. When its
channels differ from the teacher's, a 1x1 convolution (a regressor trained with it, as
in FitNets; not part of the searched network) maps them; a finer output is
average-pooled to the teacher's size; a coarser one fails (``error``). A block whose
output already has the teacher's shape is compared as it is (``readout=fit``) or
through a trained per-channel scale and shift (``readout=affine``): a read-out trained
on every block (a 1x1 convolution + batch norm) hid what a block does to the scale of
its features, and ranked architectures worse (Kendall tau 0.16 against 0.33 with full
training on digits). Batches are small (32) so that a small data set still gives a
block enough steps: at 128, on digits, most parts reproduced their teacher's features
worse than its channel means did.

Metrics of a block trial:

* ``distill_loss``: the rating, the loss on the validation split: ``mse`` (mean squared
  error against the raw features) or ``mse_norm`` (the default; the error of each
  channel divided by that teacher channel's standard deviation on the training split,
  so every channel counts alike);
* ``accuracy``: the share of the teacher's feature variance the block reproduces,
  ``1 - distill_loss / baseline`` clipped to [0, 1], where ``baseline`` is the loss of
  predicting each channel's training mean (R^2). It is a fraction, decreasing in the
  loss, so a study's accuracy conventions hold; it ranks parts of the same block only;
* ``block``, ``epochs``, ``train_seconds`` and the block's own analytic costs
  (:meth:`~epnas.spaces.base.Space.block_cost`).

The teacher's features are computed once per worker and block and kept in memory
(``cache=true``); with ``cache=false`` the teacher runs again on every batch, for data
whose features do not fit.

Every other fidelity (``prediction``, ``full``, EcoNAS settings) trains a whole genome
end to end with labels, as the ``training`` evaluator does: the ``dna`` strategy's last
trial, its assembled network, is one of those. Two options change that training at
``prediction`` and ``full``:

* ``init=parts`` (the default; ``init=scratch`` turns it off): a block trial leaves its
  trained block in its trial directory
  (:func:`part_file`, with the part's genome), and an assembled genome whose candidate
  names its parts (info ``part_keys``, as the ``dna`` strategy's does) starts every
  block from its part's distilled weights, found in the run's other trial directories
  (or in this evaluator's memory, for a study without a run directory). The regressor
  is not part of the network; where a part's input channels are the teacher's and the
  assembled block reads fewer (the previous part's), a convolution reading them is
  folded with the previous part's 1x1 regressor (its bias left out: a batch norm
  follows); any other tensor whose shape differs keeps its fresh initialisation, and
  so does the head (every exit of a ``multistage`` network). Metrics ``init_blocks``
  (blocks started from their parts) and ``init_tensors`` (the share of the blocks'
  tensors loaded).
* ``kd=a`` (``kd_temperature=T``; off by default): the training loss is ``(1 - a) CE(labels) + a T^2
  KL(softmax(teacher / T) || softmax(student / T))`` on the teacher's logits for the
  same augmented batch (computed once for the whole training split when the schedule
  does not augment); a network with several exits (``multistage``) is trained so at
  every exit. Validation stays plain cross-entropy accuracy.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from epnas.data import Dataset
from epnas.errors import EpnasError, validation_message
from epnas.evaluators.base import Evaluator
from epnas.evaluators.proxy import Setting
from epnas.evaluators.teacher import Teacher, load_teacher
from epnas.evaluators.training import TrainingEvaluator
from epnas.spaces.genome import Genome
from epnas.spaces.registry import load_genome, space_of
from epnas.train.schedules import Schedule
from epnas.train.sharing import save_atomic
from epnas.train.threads import follow
from epnas.train.trainer import Criterion
from epnas.trial import Candidate, Result, TrialContext

BLOCK = "block="
"""Prefix of the block fidelities: ``block=0``, ``block=1``, ..."""


def block_fidelity(index: int) -> str:
    return f"{BLOCK}{index}"


def block_index(fidelity: str | None) -> int | None:
    """K of ``block=K``; None for any other fidelity."""
    if fidelity is None or not fidelity.startswith(BLOCK):
        return None
    try:
        return int(fidelity[len(BLOCK):])
    except ValueError:
        raise EpnasError(f"fidelity {fidelity!r}: expected block=K with K a block number") \
            from None


def part_file(index: int, key: str) -> str:
    """The file a block trial leaves its trained block in: ``part-K-KEY.pt``, holding
    ``block``, ``part`` (its genome JSON), ``input_channels`` (the teacher's), ``weights``
    (the block's state_dict) and ``regressor`` (the regressor's)."""
    return f"part-{index}-{key}.pt"


def find_part(trials: str | Path, index: int, key: str) -> Path | None:
    """The file a block trial in one of the trial directories under ``trials`` left for
    part ``key`` of block ``index`` (:func:`part_file`); None if none did."""
    return next(iter(sorted(Path(trials).glob(f"*/{part_file(index, key)}"))), None)


Shape3 = tuple[int, int, int]


class DistillOptions(BaseModel):
    """Options of the distillation (``--evaluator-opt KEY=VALUE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    teacher: str  # a directory (genome.json + model.pt), a model.pt, or FILE.py:function
    teacher_genome: str | None = None  # the genome JSON of a model.pt given alone
    blocks: tuple[str, ...] | None = None  # module names ending each teacher block
    loss: Literal["mse", "mse_norm"] = "mse_norm"
    epochs: int = Field(4, ge=1)  # passes over the training features per block trial
    batch_size: int = Field(32, ge=1)  # small: a small data set still gives many steps
    lr: float = Field(1e-2, gt=0)  # Adam's learning rate
    samples: int | None = Field(None, ge=1)  # training images used (None: all)
    cache: bool = True  # keep the teacher's features in memory (per worker and block)
    # what reads the part's output out: "fit" only where the shape differs, "affine"
    # adds a per-channel scale and shift where the channels already match
    readout: Literal["fit", "affine"] = "fit"
    # the end-to-end trial of an assembled genome: its blocks from scratch or from its
    # parts' distilled weights; the weight of knowledge distillation from the teacher's
    # logits (0: labels only) and its temperature
    init: Literal["scratch", "parts"] = "parts"
    kd: float = Field(0.0, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)


class DistillEvaluator(Evaluator):
    """Rates a block's part by how well it reproduces a teacher's features (``block=K``);
    trains whole genomes end to end at the training fidelities (module docs).

    Args:
        teacher, teacher_genome, blocks, loss, epochs, batch_size, lr, samples, cache,
        readout, init, kd, kd_temperature:
            see :class:`DistillOptions` and the module docs.
        dataset, data, seed, schedule, time_limit, device, val_fraction, max_memory: as
            for :class:`~epnas.evaluators.training.TrainingEvaluator` (the end-to-end
            fidelities train with them; ``seed`` and ``device`` serve the blocks too).
    """

    path_options: ClassVar[tuple[str, ...]] = ("data", "teacher", "teacher_genome")
    # the named end-to-end fidelities; ``block=K`` and EcoNAS settings are accepted too
    fidelities: ClassVar[tuple[str, ...]] = ("prediction", "full")
    default_fidelity: ClassVar[str | None] = "prediction"
    metrics = ("accuracy", "train_seconds")

    def __init__(self, teacher: str, dataset: str | Dataset = "digits", data: str | None = None,
                 seed: int = 0, *, teacher_genome: str | None = None,
                 blocks: str | list[str] | None = None, loss: str = "mse_norm",
                 epochs: int = 4, batch_size: int = 32, lr: float = 1e-2,
                 samples: int | None = None, cache: bool = True, readout: str = "fit",
                 init: str = "parts", kd: float = 0.0, kd_temperature: float = 4.0,
                 schedule: dict[str, Any] | None = None, time_limit: float | None = None,
                 device: str | None = None, val_fraction: float = 0.1,
                 max_memory: float | None = None) -> None:
        if isinstance(blocks, str):
            blocks = [blocks]
        try:
            self.options = DistillOptions(
                teacher=str(teacher), teacher_genome=teacher_genome,
                blocks=tuple(blocks) if blocks else None, loss=loss, epochs=epochs,
                batch_size=batch_size, lr=lr, samples=samples, cache=cache,
                readout=readout, init=init, kd=kd, kd_temperature=kd_temperature)
        except ValidationError as exc:
            raise EpnasError(validation_message("distill evaluator options", exc)) from None
        self.training = TrainingEvaluator(dataset, data=data, seed=seed, schedule=schedule,
                                          time_limit=time_limit, device=device,
                                          val_fraction=val_fraction, max_memory=max_memory,
                                          share=False)
        self.seed, self.time_limit = seed, time_limit
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._teacher: Teacher | None = None
        self._plan: list[tuple[Shape3, Shape3]] | None = None
        self._features: dict[int, tuple[torch.Tensor, ...]] = {}
        self._moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._parts: dict[tuple[int, str], dict[str, Any]] = {}  # trained blocks, by (K, key)
        self._logits: torch.Tensor | None = None  # the teacher's on the training split

    # --- the teacher -------------------------------------------------------------

    @property
    def data(self) -> Dataset:
        return self.training.loaded

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:
            o = self.options
            self._teacher = load_teacher(o.teacher, self.data.input_shape,
                                         self.data.num_classes, blocks=o.blocks,
                                         genome=o.teacher_genome).to(self.device)
        return self._teacher

    def block_plan(self) -> list[tuple[Shape3, Shape3]]:
        """``(input shape, output shape)`` of every teacher block, in order; the ``dna``
        strategy searches one part per block to fit them."""
        if self._plan is None:
            features = self.teacher.features(self._inputs(self.data.train_x[:2]))
            shapes = [self.data.input_shape] + [tuple(f.shape[1:]) for f in features]
            self._plan = [(shapes[k], shapes[k + 1]) for k in range(len(features))]  # type: ignore[misc]
        return self._plan

    def prepare(self) -> None:
        """Load the data set and the teacher (a bad teacher stops the run before it starts)."""
        self.training.prepare()
        if len(self.data.val_x) == 0:
            raise EpnasError("the distill evaluator rates blocks on the validation split, "
                             "which is empty: use a val_fraction above 0")
        self.block_plan()

    def check_fidelity(self, fidelity: str) -> None:
        """``block=K`` for each teacher block K, and the training evaluator's fidelities."""
        index = block_index(fidelity)
        if index is None:
            self.training.check_fidelity(fidelity)
        elif not 0 <= index < len(self.block_plan()):
            raise EpnasError(f"fidelity {fidelity!r}: the teacher has blocks 0.."
                             f"{len(self.block_plan()) - 1}")

    def costs(self, genome: Genome) -> dict[str, float]:
        return self.training.costs(genome)

    def trial_memory(self, genome: Genome) -> float:
        return self.training.trial_memory(genome)

    # --- evaluation --------------------------------------------------------------

    def evaluate(self, candidate: Candidate) -> Result:
        return self.evaluate_trial(candidate, TrialContext())

    def evaluate_trial(self, candidate: Candidate, context: TrialContext) -> Result:
        try:
            index = block_index(candidate.fidelity)
        except EpnasError as exc:
            return Result.failure("error", str(exc))
        if index is None:
            return self.end_to_end(candidate, context)
        try:
            return self.distill(candidate.genome, index, context.directory)
        except torch.OutOfMemoryError as exc:
            return Result.failure("oom", str(exc).splitlines()[0])

    def end_to_end(self, candidate: Candidate, context: TrialContext) -> Result:
        """Train a whole genome with labels (the training evaluator's trial), from its
        parts' weights (``init=parts``) and with the teacher's logits (``kd``) at the
        full-size fidelities (module docs)."""
        o = self.options
        try:
            setting = Setting.parse(candidate.fidelity or self.default_fidelity)
        except EpnasError as exc:
            return Result.failure("error", str(exc))
        if setting.reduced or setting.pretext is not None:
            return self.training.evaluate_trial(candidate, context)
        keys = candidate.info.get("part_keys")
        init = None
        if o.init == "parts" and keys:
            init = functools.partial(self._init_parts, candidate.genome, list(keys),
                                     context.directory)
        criterion = None
        if o.kd > 0:
            try:
                criterion = self._kd_criterion(self.training.schedule(str(setting), self.data))
            except EpnasError as exc:
                return Result.failure("error", str(exc))
        try:
            return self.training.evaluate_trial(candidate, context, init=init,
                                                criterion=criterion)
        except EpnasError as exc:
            return Result.failure("error", str(exc))

    def distill(self, part: Genome, index: int, directory: str | None = None) -> Result:
        """Train block ``index`` built from ``part`` to the teacher's features; its result.
        The trained block is kept for ``init=parts`` (in ``directory`` too, when given:
        :func:`part_file`)."""
        plan = self.block_plan()
        if not 0 <= index < len(plan):
            return Result.failure("error", f"block {index}: the teacher has blocks "
                                           f"0..{len(plan) - 1}")
        in_shape, out_shape = plan[index]
        space = space_of(part)
        try:
            costs = space.block_cost(part, index, in_shape).as_dict(self.options.batch_size)
            got = space.block_shape(part, index, in_shape)
        except EpnasError as exc:
            return Result.failure("error", str(exc))
        if got[1] < out_shape[1] or got[2] < out_shape[2]:
            return Result.failure("error", f"block {index}: the part outputs {got[1]}x{got[2]}, "
                                           f"coarser than the teacher's {out_shape[1]}x"
                                           f"{out_shape[2]}", costs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = nn.Sequential(space.build_block(part, index, in_shape),
                                  _regressor(got, out_shape, self.options.readout == "affine")
                                  ).to(self.device)
        start = time.perf_counter()
        stats = self._stats(index)
        trained = self._train(model, index, stats)
        seconds = time.perf_counter() - start
        metrics = {**costs, "block": float(index), "train_seconds": seconds,
                   "epochs": float(trained["epochs"])}
        if trained["status"] == "diverged":
            return Result.failure("diverged", f"the distillation loss became "
                                              f"{trained['loss']}", metrics)
        if trained["status"] == "timeout":
            return Result.failure("timeout", f"distillation passed time_limit="
                                             f"{self.time_limit}s", metrics)
        loss, baseline = self._validate(model, index, stats)
        if not math.isfinite(loss):
            return Result.failure("diverged", f"the validation loss is {loss}", metrics)
        accuracy = min(1.0, max(0.0, 1.0 - loss / baseline)) if baseline > 0 else 0.0
        self._keep(part, index, in_shape[0], model, directory)
        return Result("done", {**metrics, "distill_loss": loss, "accuracy": accuracy})

    # --- the end-to-end trial: parts' weights and the teacher's logits --------------

    def _keep(self, part: Genome, index: int, channels: int, model: nn.Module,
              directory: str | None) -> None:
        """Keep a trained block (and its regressor) in memory and in ``directory``."""
        def cpu(module: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}

        state = {"block": index, "part": part.to_json(), "input_channels": channels,
                 "weights": cpu(model[0]), "regressor": cpu(model[1])}
        self._parts[(index, part.key)] = state
        if directory is not None:
            save_atomic(state, Path(directory) / part_file(index, part.key))

    def part_state(self, index: int, key: str,
                   directory: str | None = None) -> dict[str, Any] | None:
        """The trained block of part ``key`` of block ``index``: kept in memory, or left by
        a block trial in a sibling of the trial directory ``directory``; None if neither."""
        state = self._parts.get((index, key))
        if state is None and directory is not None:
            path = find_part(Path(directory).parent, index, key)
            if path is not None:
                state = torch.load(path, map_location="cpu", weights_only=True)
        return state

    def _init_parts(self, genome: Genome, keys: list[str], directory: str | None,
                    model: nn.Module) -> dict[str, float]:
        """Load every block of ``model`` (built from the assembled ``genome``) from its
        part's trained block, in order, up to the first part not found; its metrics."""
        states = []
        for k, key in enumerate(keys):
            state = self.part_state(k, str(key), directory)
            if state is None:
                logging.getLogger(__name__).warning(
                    "init=parts: the trained block of part %s of block %d is not found; "
                    "blocks %d.. start from scratch", key, k, k)
                break
            states.append(state)
        return load_parts(genome, model, states, self.data.input_shape)

    def _kd_criterion(self, schedule: Schedule) -> Criterion:
        """The knowledge-distillation loss (module docs) for a training run at ``schedule``.

        Raises:
            TeacherError: the teacher's forward pass gives no logits of the data's classes.
        """
        a, t = self.options.kd, self.options.kd_temperature
        classes = self.data.num_classes
        augments = bool(schedule.crop_padding or schedule.flip or schedule.brightness
                        or schedule.contrast or schedule.cutout)
        cached = None if augments else self._train_logits()
        if augments:
            self.teacher.logits(self._inputs(self.data.train_x[:2]), classes)  # its shape
        smoothing = schedule.label_smoothing

        def criterion(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                      idx: torch.Tensor) -> torch.Tensor:
            target = self.teacher.logits(x, classes) if cached is None else cached[idx]
            kl = F.kl_div(F.log_softmax(z / t, 1), F.log_softmax(target / t, 1),
                          reduction="batchmean", log_target=True)
            return (1 - a) * F.cross_entropy(z, y, label_smoothing=smoothing) + a * t * t * kl

        return criterion

    def _train_logits(self) -> torch.Tensor:
        """The teacher's logits on the whole (unaugmented) training split, once."""
        if self._logits is None:
            x = self.data.train_x
            self._logits = torch.cat([self.teacher.logits(self._inputs(x[s:s + 512]),
                                                          self.data.num_classes)
                                      for s in range(0, len(x), 512)])
        return self._logits

    # --- features and training ---------------------------------------------------

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images normalised as the trainer does, on the device."""
        return self.data.normalised(images.to(self.device))

    def _images(self, split: str) -> torch.Tensor:
        data = self.data
        if split == "val":
            return data.val_x
        x = data.train_x
        if self.options.samples is not None and self.options.samples < len(x):
            generator = torch.Generator().manual_seed(self.seed)
            x = x[torch.randperm(len(x), generator=generator)[: self.options.samples]]
        return x

    def _pair(self, images: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (input, output) features of block ``index`` for uint8 images."""
        x = self._inputs(images)
        features = self.teacher.features(x, upto=index)
        return (x if index == 0 else features[index - 1]), features[index]

    def _batches(self, split: str, index: int,
                 order: torch.Tensor | None = None) -> Any:
        """(input, target) batches of block ``index``, from the cache or the teacher."""
        size = self.options.batch_size
        if self.options.cache:
            cached = self._cached(index)
            x, y = cached[:2] if split == "train" else cached[2:4]
            order = order if order is not None else torch.arange(len(x))
            for start in range(0, len(x), size):
                idx = order[start:start + size].to(x.device)
                yield x[idx], y[idx]
            return
        images = self._images(split)
        order = order if order is not None else torch.arange(len(images))
        for start in range(0, len(images), size):
            yield self._pair(images[order[start:start + size]], index)

    def _cached(self, index: int) -> tuple[torch.Tensor, ...]:
        """Train input, train target, val input, val target of block ``index``."""
        if index not in self._features:
            tensors: list[torch.Tensor] = []
            for split in ("train", "val"):
                images = self._images(split)
                pairs = [self._pair(images[s:s + 512], index) for s in range(0, len(images), 512)]
                tensors += [torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])]
            self._features = {index: tuple(tensors)}  # one block per worker at a time
        return self._features[index]

    def _stats(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the block's training targets."""
        if index not in self._moments:
            self._moments[index] = self._measure_stats(index)
        return self._moments[index]

    def _measure_stats(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        total = square = None
        count = 0
        for _, y in self._batches("train", index):
            s, q = y.sum((0, 2, 3)), y.pow(2).sum((0, 2, 3))
            total = s if total is None else total + s
            square = q if square is None else square + q
            count += y.shape[0] * y.shape[2] * y.shape[3]
        assert total is not None and square is not None
        mean = total / count
        std = (square / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-6)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor,
              stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.options.loss == "mse_norm":  # in units of each teacher channel's spread
            std = stats[1]
            return F.mse_loss(prediction / std, target / std)
        return F.mse_loss(prediction, target)

    def _train(self, model: nn.Module, index: int,
               stats: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        if not any(p.requires_grad for p in model.parameters()):  # e.g. a lone pool
            return {"status": "done", "epochs": 0, "loss": math.nan}
        optimizer = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        steps = self.options.epochs * math.ceil(len(self._images("train"))
                                                / self.options.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.options.lr,
                                                       total_steps=steps, pct_start=0.15)
        generator = torch.Generator().manual_seed(self.seed + index)
        deadline = None if self.time_limit is None else time.monotonic() + self.time_limit
        model.train()
        loss = torch.tensor(0.0)
        for epoch in range(self.options.epochs):
            order = torch.randperm(len(self._images("train")), generator=generator)
            for x, y in self._batches("train", index, order):
                follow()  # the worker pool may lend this trial more threads
                loss = self._loss(model(x), y, stats)
                if not torch.isfinite(loss):
                    return {"status": "diverged", "epochs": epoch, "loss": loss.item()}
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            if deadline is not None and time.monotonic() > deadline:
                return {"status": "timeout", "epochs": epoch + 1, "loss": loss.item()}
        return {"status": "done", "epochs": self.options.epochs, "loss": loss.item()}

    @torch.no_grad()
    def _validate(self, model: nn.Module, index: int,
                  stats: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """The validation loss and that of predicting each channel's training mean."""
        mean = stats[0]
        model.eval()
        loss = baseline = 0.0
        count = 0
        for x, y in self._batches("val", index):
            n = x.shape[0]
            loss += float(self._loss(model(x), y, stats)) * n
            baseline += float(self._loss(mean.expand_as(y), y, stats)) * n
            count += n
        return loss / count, baseline / count


@torch.no_grad()
def load_parts(genome: Genome, model: nn.Module, states: list[Mapping[str, Any]],
               input_shape: Shape3) -> dict[str, float]:
    """Copy trained blocks (:func:`part_file`'s contents, blocks 0, 1, ... in order) into
    ``model``, the network of the assembled ``genome`` on ``input_shape``. Its
    state_dict must begin with its blocks', in order (as the built-in spaces build);
    a tensor whose shape differs only in the input channels of a block after the first
    is folded with the previous part's 1x1 regressor, any other keeps its value.

    Returns:
        ``init_blocks`` and ``init_tensors`` (the share of the loaded blocks' tensors).

    Raises:
        EpnasError: ``model``'s state_dict does not follow the parts' blocks.
    """
    space = space_of(genome)
    full = list(model.state_dict().items())
    position, loaded, total = 0, 0, 0
    shape, regressor = input_shape, None
    for k, state in enumerate(states):
        part = load_genome(state["part"])
        saved = state["weights"]
        teacher_channels = int(state["input_channels"])
        for name, value in space.build_block(part, k, shape).state_dict().items():
            if position >= len(full) or full[position][1].shape != value.shape or \
                    full[position][0].rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1]:
                raise EpnasError(f"init=parts: the network of {genome.key} does not begin "
                                 f"with its blocks' weights (block {k}, {name}); use "
                                 "init=scratch")
            target = full[position][1]
            position += 1
            total += 1
            source = saved.get(name)
            if source is None:
                continue
            if source.shape != target.shape:
                source = _folded(source, target.shape, teacher_channels, regressor)
            if source is not None:
                target.copy_(source)
                loaded += 1
        shape = space.block_shape(part, k, shape)
        regressor = next((v for v in state["regressor"].values() if v.dim() == 4
                          and v.shape[1] == shape[0] and v.shape[0] != shape[0]), None)
    return {"init_blocks": float(len(states)), "init_tensors": loaded / max(total, 1)}


def _folded(weight: torch.Tensor, shape: torch.Size, channels: int,
            regressor: torch.Tensor | None) -> torch.Tensor | None:
    """A convolution ``weight`` reading the teacher's ``channels`` made to read the
    previous part's output through its 1x1 ``regressor`` (teacher x part channels);
    None when it is not such a weight."""
    if regressor is None or weight.dim() != 4 or weight.shape[1] != channels or \
            (weight.shape[0], *weight.shape[2:]) != (shape[0], *shape[2:]) or \
            tuple(regressor.shape[:2]) != (channels, shape[1]):
        return None
    return torch.einsum("otij,ts->osij", weight, regressor[:, :, 0, 0])


def _regressor(got: Shape3, want: Shape3, affine: bool = False) -> nn.Module:
    """Average pooling to the teacher's size when the part's output is finer, and a 1x1
    convolution (with bias) to the teacher's channels when their numbers differ; where
    they match, a per-channel scale and shift (starting as the identity) when
    ``affine``, else nothing."""
    parts: list[nn.Module] = []
    if got[1:] != want[1:]:
        parts.append(nn.AdaptiveAvgPool2d(want[1:]))
    if got[0] != want[0]:
        parts.append(nn.Conv2d(got[0], want[0], 1))
    elif affine:
        scale = nn.Conv2d(got[0], got[0], 1, groups=got[0])
        nn.init.ones_(scale.weight)
        nn.init.zeros_(scale.bias)
        parts.append(scale)
    return nn.Sequential(*parts) if parts else nn.Identity()
