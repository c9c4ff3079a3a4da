"""Training the supernet by progressive shrinking (once-for-all), resumable after kill -9.

Phases, in order (:data:`PHASES`), each ``epochs_per_phase[i]`` epochs with its own
cosine learning-rate curve and a fresh optimiser:

1. ``largest``: the largest network alone (at the largest resolution);
2. ``kernel``: kernel sizes and the resolution become elastic;
3. ``depth``: the stages' depths too;
4. ``expand``: the expansion ratios too, after every block's hidden channels are sorted
   by importance (:meth:`Supernet.sort_channels`).

Every step follows the sandwich rule: the gradients of the largest network, the
smallest of the phase's elastic set and ``subnets`` random settings of it are summed
before one SGD step. Each network's loss is the mean over its exits of the exit's
cross-entropy plus ``distill`` times the KL divergence from the largest network's
last exit (soft targets at ``temperature``, detached): in-place distillation that
also makes later exits teach earlier ones (the largest's own earlier exits included).

The data pipeline, augmentation, autocast (bf16 or fp16 with loss scaling on CUDA,
bf16 on CPUs where it is faster), channels-last layout and the learning-rate curve
are the trainer's (:mod:`epnas.train`). After every epoch the whole training state
is written atomically to ``DIR/checkpoint.pt``; training the same ``DIR`` again
continues from it. At the end of each phase the largest and the smallest network are
measured at every exit (BatchNorm recalibrated) into ``DIR/report.json``; the trained
weights go to ``DIR/supernet.pt`` beside ``DIR/supernet.json`` (what the supernet is).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from epnas.data import Dataset, augment, load, locate
from epnas.errors import EpnasError, validation_message
from epnas.spaces.multistage.genome import MultistageGenome, MultistageOptions
from epnas.store import LOCK_NAME, RunLock
from epnas.supernet.elastic import DIMENSIONS, Supernet, recalibrate
from epnas.train import schedules
from epnas.train.sharing import save_atomic, write_atomic
from epnas.train.trainer import (
    BF16_MARGIN,
    autocast_dtype,
    decide_precision,
    keep_freed_memory,
    model_bf16_speedup,
)

PHASES = ("largest", "kernel", "depth", "expand")
ELASTIC = {"largest": (), "kernel": ("kernel", "resolution"),
           "depth": ("kernel", "resolution", "depth"), "expand": DIMENSIONS}
"""The dimensions each phase samples (the others stay at their largest)."""

META_FILE, WEIGHTS_FILE = "supernet.json", "supernet.pt"
CHECKPOINT_FILE, REPORT_FILE = "checkpoint.pt", "report.json"
FORMAT = 1

Progress = Callable[[dict[str, Any]], None]


class SupernetOptions(BaseModel):
    """How the supernet is trained (``--opt KEY=VALUE`` on the command line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # epochs of the largest, kernel, depth and expand phases (0 skips a phase)
    epochs_per_phase: tuple[int, int, int, int] = (4, 2, 2, 2)
    batch_size: int = Field(128, ge=1)  # images per step (every sandwich network sees them)
    lr: float = Field(0.1, gt=0)  # peak LR of the largest phase (cosine to 0 per phase)
    shrink_lr: float = Field(0.03, gt=0)  # peak LR of the shrinking phases
    weight_decay: float = Field(5e-5, ge=0)  # on conv and linear weights
    subnets: int = Field(2, ge=0)  # random sub-networks per step besides largest, smallest
    distill: float = Field(1.0, ge=0)  # weight of the KL term from the largest's last exit
    temperature: float = Field(1.0, gt=0)  # of the soft targets
    calibration_batches: int = Field(4, ge=1)  # BN recalibration batches for the report
    samples: int | None = Field(None, ge=1)  # train on this many images (seeded subset)
    seed: int = 0  # weights, shuffling, augmentation, sampled sub-networks
    precision: str = "auto"  # as the trainer's Schedule: auto, fp32, bf16, fp16
    channels_last: bool = True

    @field_validator("epochs_per_phase")
    @classmethod
    def _epochs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 0 or value[0] < 1:
            raise ValueError("epochs must be >= 0, and the largest phase needs at least 1")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {value!r}")
        return value


def validated(model: type[BaseModel], owner: str, values: dict[str, Any]) -> Any:
    """``model(**values)``, a validation error as one :class:`EpnasError` line."""
    try:
        return model(**values)
    except ValueError as exc:
        raise EpnasError(validation_message(owner, exc)) from None


def calibration(data: Dataset, batches: int, batch_size: int, seed: int,
                device: torch.device) -> list[torch.Tensor]:
    """``batches`` normalised batches of training images drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train_y), generator=generator)
    return [data.normalised(data.train_x[order[i * batch_size:(i + 1) * batch_size]].to(device))
            for i in range(min(batches, math.ceil(len(order) / batch_size)))]


@torch.no_grad()
def exit_logits(model: torch.nn.Module, images: torch.Tensor, data: Dataset,
                batch_size: int = 256) -> torch.Tensor:
    """Every exit's logits on ``images``: ``[exits, N, classes]`` (fp32, on the model's
    device)."""
    device = next(model.parameters()).device
    model.eval()
    out = [torch.stack(model.forward_exits(data.normalised(images[i:i + batch_size].to(device))))
           for i in range(0, len(images), batch_size)]
    return torch.cat(out, 1).float()


def measure(supernet: Supernet, genome: MultistageGenome, data: Dataset,
            calibration_batches: list[torch.Tensor]) -> list[float]:
    """Validation accuracy at every exit of ``genome``'s sub-network, BN recalibrated."""
    net = recalibrate(supernet.subnet(genome), calibration_batches)
    logits = exit_logits(net, data.val_x, data)
    labels = data.val_y.to(logits.device)
    return [float((k.argmax(1) == labels).float().mean()) for k in logits]


def exits_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor, soft: torch.Tensor | None,
               options: SupernetOptions, teacher: bool = False) -> torch.Tensor:
    """Mean over exits of cross-entropy plus the weighted KL from ``soft`` (the teacher's
    own last exit is not distilled from itself)."""
    t = options.temperature
    total = logits[0].new_zeros((), dtype=torch.float32)
    for k, z in enumerate(logits):
        z = z.float()
        loss = F.cross_entropy(z, labels)
        if soft is not None and options.distill and not (teacher and k == len(logits) - 1):
            kl = F.kl_div(F.log_softmax(z / t, 1), soft, reduction="batchmean")
            loss = loss + options.distill * t * t * kl
        total = total + loss
    return total / len(logits)


def describe(supernet: Supernet, data: Dataset, dataset: str, root: str | None,
             options: SupernetOptions) -> dict[str, Any]:
    """What ``DIR/supernet.json`` records: enough to rebuild the supernet and its data."""
    return {"format": FORMAT, "space": "multistage",
            "space_options": supernet.options.model_dump(mode="json"),
            "dataset": dataset, "input_shape": list(data.input_shape),
            # absolute where it exists, so a search from another directory finds it
            "data": str(Path(root).resolve()) if root and Path(root).exists() else root,
            "num_classes": data.num_classes, "options": options.model_dump(mode="json")}


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``DIR/supernet.json``; raises :class:`EpnasError` when DIR holds no supernet."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except OSError:
        raise EpnasError(f"{directory} holds no supernet ({META_FILE} missing); train one "
                         f"with: epnas supernet train --out {directory}") from None
    except ValueError as exc:
        raise EpnasError(f"{path}: not a supernet description ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("space") != "multistage":
        raise EpnasError(f"{path}: unknown supernet format {meta.get('format')!r}")
    return meta


def build_supernet(meta: dict[str, Any]) -> Supernet:
    """The (untrained) supernet a description names."""
    options = MultistageOptions(**meta["space_options"])
    return Supernet(options, int(meta["input_shape"][0]), int(meta["num_classes"]))


def load_supernet(directory: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[Supernet, dict[str, Any]]:
    """The trained supernet in DIR and its description.

    Raises:
        EpnasError: DIR holds no supernet, or its training has not finished.
    """
    meta = read_meta(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise EpnasError(f"the supernet in {directory} has not finished training; continue "
                         f"it with: epnas supernet resume {directory}")
    supernet = build_supernet(meta)
    supernet.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return supernet.to(device).eval(), meta


def save_supernet(supernet: Supernet, meta: dict[str, Any], directory: str | Path) -> None:
    """Write a supernet's description and weights to DIR (what the evaluator loads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / META_FILE, meta)
    save_atomic({k: v.detach().cpu() for k, v in supernet.state_dict().items()},
                directory / WEIGHTS_FILE)


def _schedule(options: SupernetOptions, phase: str, epochs: int, data: Dataset
              ) -> schedules.Schedule:
    """The trainer's ``full`` preset for this data set (crop and flip only) at the
    phase's length and peak LR."""
    return schedules.get("full", data, epochs=epochs, batch_size=options.batch_size,
                         lr=options.lr if phase == "largest" else options.shrink_lr,
                         weight_decay=options.weight_decay, brightness=0.0, contrast=0.0,
                         cutout=0, precision=options.precision,
                         channels_last=options.channels_last)


class SupernetTraining:
    """One supernet's training in DIR: set up (nothing written), then :meth:`run`.

    Args:
        out: the directory; a supernet already there with the same settings continues
            from its checkpoint, one with other settings is refused.
        dataset: data set name (``data``: where its files are) or a loaded
            :class:`~epnas.data.Dataset`.
        space_options: the ``multistage`` space options (``--space-opt``).
        options: :class:`SupernetOptions` fields.
        device: ``cpu``, ``cuda``, ... (None: CUDA when available).

    Raises:
        EpnasError: bad options, unknown or missing data, or DIR holds something else.
    """

    def __init__(self, out: str | Path, dataset: str | Dataset = "digits", data: str | None = None,
                 space_options: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, device: str | None = None) -> None:
        self.out = Path(out)
        self.options: SupernetOptions = validated(SupernetOptions, "supernet options",
                                                      dict(options or {}))
        space = validated(MultistageOptions, "space options", dict(space_options or {}))
        if isinstance(dataset, Dataset):
            self.data, dataset = dataset, dataset.name
        else:
            locate(dataset, data)
            self.data = load(dataset, data)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            self.supernet = Supernet(space, self.data.input_shape[0], self.data.num_classes)
        if self.options.precision == "auto":  # decided once, then read from DIR
            self.options = self.options.model_copy(update={"precision": self._auto_precision()})
        self.meta = describe(self.supernet, self.data, dataset, data, self.options)
        self.state: dict[str, Any] | None = None
        if (self.out / META_FILE).exists():
            held = read_meta(self.out)
            if {k: v for k, v in held.items() if k != "data"} != \
                    {k: v for k, v in self.meta.items() if k != "data"}:
                raise EpnasError(f"{self.out} holds a supernet trained with other settings; "
                                 "give another --out (or resume it with: epnas supernet "
                                 f"resume {self.out})")
            path = self.out / CHECKPOINT_FILE
            if path.is_file():
                self.state = torch.load(path, map_location="cpu", weights_only=True)
        elif self.out.exists() and any(p.name != LOCK_NAME for p in self.out.iterdir()):
            raise EpnasError(f"{self.out} is not empty and holds no supernet; give an empty "
                             "or new --out")

    def _auto_precision(self) -> str:
        """What ``precision="auto"`` is for this supernet: the decision DIR recorded, else
        :func:`~epnas.train.trainer.decide_precision` now (recorded in ``supernet.json``),
        so a resumed training, or another user's, keeps the precision it started with.

        Where that picks bf16 on a CPU, this supernet's own training step decides: its
        elastic layers (kernels sliced and transformed, channels selected at every step)
        ran at 0.57-1.05 times their fp32 speed in bf16 (by batch and memory format) on
        a CPU whose plain convolutions ran 1.5 times faster in it, so bf16 is kept only
        where the largest network's forward and backward measure at least
        ``BF16_MARGIN`` times faster in it (about two seconds, once).
        """
        if (self.out / META_FILE).exists():
            return str(read_meta(self.out)["options"].get("precision", "auto"))
        precision = decide_precision(self.device)[0]
        if precision == "bf16" and self.device.type == "cpu":
            side = self.supernet.options.resolutions[-1]
            example = torch.randn(min(self.options.batch_size, 32),
                                  self.data.input_shape[0], side, side)
            if model_bf16_speedup(self.supernet, example) < BF16_MARGIN:
                return "fp32"
        return precision

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state["phase"] >= len(PHASES)

    def report(self) -> list[dict[str, Any]]:
        """Per finished phase: epochs, mean loss of its last epoch, and the largest and
        smallest networks' validation accuracy at every exit."""
        return list(self.state["report"]) if self.state else []

    def run(self, progress: Progress | None = None) -> list[dict[str, Any]]:
        """Train what is left; returns :meth:`report`.

        Raises:
            EpnasError: another live process is training in DIR (the message names it).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.out)
        try:
            path = self.out / CHECKPOINT_FILE
            if path.is_file():  # another process may have trained on since we looked
                self.state = torch.load(path, map_location="cpu", weights_only=True)
            return self._run(progress)
        finally:
            lock.release()

    def _run(self, progress: Progress | None) -> list[dict[str, Any]]:
        keep_freed_memory()
        if not (self.out / META_FILE).exists():
            _write_json(self.out / META_FILE, self.meta)
        net, device, o = self.supernet, self.device, self.options
        state = self.state or {"phase": 0, "epoch": 0, "step": 0, "report": [],
                               "history": [], "sorted": False}
        if self.state is not None:
            net.load_state_dict(state["model"])
        net.to(device)
        train_x, train_y = self.data.train_x, self.data.train_y
        if o.samples is not None and o.samples < len(train_y):
            keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(o.seed))
            train_x, train_y = train_x[keep[:o.samples]], train_y[keep[:o.samples]]
        train_x, train_y = train_x.to(device), train_y.to(device)
        mean = torch.tensor(self.data.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.data.std, device=device).view(1, -1, 1, 1)
        generator = torch.Generator(device).manual_seed(o.seed)
        if "generator" in state:
            generator.set_state(state["generator"].to("cpu"))
        while state["phase"] < len(PHASES):
            phase = PHASES[state["phase"]]
            epochs = o.epochs_per_phase[state["phase"]]
            if epochs == 0:
                state.update(phase=state["phase"] + 1, epoch=0)
                continue
            if phase == "expand" and not state["sorted"]:
                net.sort_channels()
                state["sorted"] = True
            schedule = _schedule(o, phase, epochs, self.data)
            dtype = autocast_dtype(schedule.precision, device)
            layout = torch.channels_last if schedule.channels_last else torch.contiguous_format
            net.to(memory_format=layout)
            named = list(net.named_parameters())
            # conv and linear weights decay; norms, biases and the kernel maps do not
            decay = [p.ndim > 1 and "transforms" not in name for name, p in named]
            optimizer = torch.optim.SGD(
                [{"params": [p for (_, p), d in zip(named, decay) if d],
                  "weight_decay": schedule.weight_decay},
                 {"params": [p for (_, p), d in zip(named, decay) if not d],
                  "weight_decay": 0.0}],
                lr=schedule.lr, momentum=schedule.momentum, nesterov=schedule.nesterov)
            scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
            if state["epoch"] > 0 and "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
                scaler.load_state_dict(state["scaler"])
            n = len(train_y)
            batch = min(schedule.batch_size, n)
            steps = n // batch
            elastic = ELASTIC[phase]
            largest, smallest = net.largest(), net.smallest(elastic)
            while state["epoch"] < epochs:
                start, loss_sum = time.perf_counter(), 0.0
                net.train()
                order = torch.randperm(n, generator=generator, device=device)
                for i in range(steps):
                    idx = order[i * batch:(i + 1) * batch]
                    x = augment.random_crop(train_x[idx], schedule.crop_padding, generator)
                    if schedule.flip:
                        x = augment.random_flip(x, generator)
                    x = x.float().div_(255.0).sub_(mean).div_(std)
                    x = x.contiguous(memory_format=layout)
                    y = train_y[idx]
                    lr = schedule.lr_at(state["epoch"] + (i + 0.5) / steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    rng = np.random.default_rng([o.seed, state["phase"], state["step"]])
                    settings = [] if phase == "largest" else \
                        [smallest, *(net.sample(rng, elastic) for _ in range(o.subnets))]
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        logits = net.forward_exits(x, largest)
                    soft = F.softmax(logits[-1].detach().float() / o.temperature, 1)
                    loss = exits_loss(logits, y, soft, o, teacher=True)
                    scaler.scale(loss).backward()
                    for genome in settings:
                        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                            sub = net.forward_exits(x, genome)
                        scaler.scale(exits_loss(sub, y, soft, o)).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    state["step"] += 1
                    loss_sum += float(loss.detach())
                    if not math.isfinite(loss_sum):
                        raise EpnasError(f"the supernet's loss became {loss_sum} in phase "
                                         f"{phase}; lower lr (--opt lr=...) ")
                state["epoch"] += 1
                record = {"phase": phase, "epoch": state["epoch"], "epochs": epochs,
                          "loss": loss_sum / max(steps, 1), "lr": lr,
                          "seconds": time.perf_counter() - start}
                state["history"].append(record)
                if state["epoch"] == epochs:
                    calib = calibration(self.data, o.calibration_batches, batch, o.seed, device)
                    state["report"].append({
                        "phase": phase, "epochs": epochs, "loss": record["loss"],
                        "largest": measure(net, largest, self.data, calib),
                        "smallest": measure(net, smallest, self.data, calib),
                        "smallest_genome": smallest.to_dict()})
                state.update(model=net.state_dict(), optimizer=optimizer.state_dict(),
                             scaler=scaler.state_dict(), generator=generator.get_state())
                finished = state["epoch"] == epochs
                if finished:
                    state.update(phase=state["phase"] + 1, epoch=0)
                    state.pop("optimizer")
                save_atomic(state, self.out / CHECKPOINT_FILE)
                _write_json(self.out / REPORT_FILE, {"phases": state["report"],
                                                     "history": state["history"]})
                if progress is not None:
                    progress(record)
                if finished:
                    break
        # phases of 0 epochs at the end were skipped after the last epoch's checkpoint
        state.setdefault("model", net.state_dict())
        save_atomic(state, self.out / CHECKPOINT_FILE)
        self.state = state
        save_supernet(net, self.meta, self.out)
        return self.report()

    def total_epochs(self) -> int:
        return sum(self.options.epochs_per_phase)

    def done_epochs(self) -> int:
        if self.state is None:
            return 0
        return sum(self.options.epochs_per_phase[:self.state["phase"]]) + self.state["epoch"]
