"""EcoNAS reduced training settings: fidelity strings such as ``c=0.25,r=0.5,s=0.5,e=5``.

A training fidelity names a base schedule and up to four reductions (Zhou et al.,
*EcoNAS*, 2020), comma-separated in any order:

* ``full`` or ``prediction``: the base schedule (:mod:`epnas.train.schedules`);
  default ``full``, the setting EcoNAS reduces;
* ``c``: channel factor, every channel count of the built network times ``c``;
* ``r``: resolution factor, images resized to ``r`` times their side (crop padding and
  Cutout shrink with them);
* ``s``: training-sample ratio, a stratified, seeded subsample of the training set;
* ``e``: epochs; the learning-rate curve (warm-up included) is compressed or stretched
  to span exactly these, with no early stop.

Factors lie in (0, 1]; what a spec leaves out stays at 1 or at the base schedule's
epochs. ``prediction`` and ``full`` alone are the plain schedules. The accuracy of a
reduced setting is measured on the (equally resized) validation set; the costs a
search constrains remain those of the unreduced network.

A setting may also train on a self-supervised pretext task instead of the labels
(UnNAS, :mod:`epnas.data.pretext`): ``pretext=rotation``, ``pretext=jigsaw`` (options
``grid=2|3`` tiles per side, ``perms=N`` permutations) or ``pretext=colorization``
(option ``bins=N`` hue sectors), alone or with the items above, e.g.
``pretext=rotation,e=5``. Its accuracy is the pretext task's on the (transformed)
validation set; the training subsample of ``s`` is then drawn without looking at labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from epnas.data import Dataset
from epnas.errors import EpnasError, validation_message
from epnas.spaces.genome import Genome
from epnas.spaces.registry import space_of
from epnas.train import schedules

__all__ = ["FidelityError", "Setting", "accuracy_label", "pretext_of", "reduce_data"]

_KEYS = {"c": "channel factor", "r": "resolution factor", "s": "training-sample ratio",
         "e": "epochs"}
_PRETEXT_KEYS = {"pretext": "pretext task", "grid": "jigsaw tiles per side",
                 "perms": "jigsaw permutations", "bins": "colorization hue sectors"}
_FORMAT = ("a training fidelity is 'prediction', 'full', or comma-separated KEY=VALUE items "
           "c, r, s (factors in (0, 1]) and e (epochs), optionally with the base schedule, "
           "e.g. 'c=0.25,r=0.5,s=0.5,e=5' or 'prediction,r=0.5'; a pretext task trains "
           "without labels: pretext=rotation|jigsaw|colorization (jigsaw: grid=2|3, perms=N; "
           "colorization: bins=N), e.g. 'pretext=rotation,e=5'")


class FidelityError(EpnasError, ValueError):
    """A fidelity string that is not a valid training setting."""


class Setting(BaseModel):
    """A parsed training fidelity: the base schedule and its EcoNAS reductions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The schedule preset the reductions apply to.
    base: Literal["full", "prediction"] = "full"
    # Channel factor: every channel count of the network times c (rounded, >= 1).
    c: float = Field(1.0, gt=0.0, le=1.0)
    # Resolution factor: images resized to r times their height and width.
    r: float = Field(1.0, gt=0.0, le=1.0)
    # Training-sample ratio: a stratified subsample of this share of the training set.
    s: float = Field(1.0, gt=0.0, le=1.0)
    # Epochs to train (the LR curve spans them); None: the base schedule's.
    e: int | None = Field(None, ge=1)
    # A self-supervised task trained instead of the labels (epnas.data.pretext).
    pretext: Literal["rotation", "jigsaw", "colorization"] | None = None
    # jigsaw: tiles per side (None: 3 where the images allow 16-pixel tiles, else 2).
    grid: int | None = Field(None, ge=2, le=3)
    # jigsaw: size of the permutation set (None: all 24 of 2x2, 100 of 3x3).
    perms: int | None = Field(None, ge=2)
    # colorization: hue sectors (the classes are these and grey).
    bins: int | None = Field(None, ge=2, le=64)

    @model_validator(mode="after")
    def _pretext_options(self) -> Setting:
        for key, task in (("grid", "jigsaw"), ("perms", "jigsaw"), ("bins", "colorization")):
            if getattr(self, key) is not None and self.pretext != task:
                raise ValueError(f"{key} is an option of pretext={task}")
        return self

    @classmethod
    def parse(cls, text: str) -> Setting:
        """Parse a fidelity string (see the module docstring).

        Raises:
            FidelityError: The string is malformed or a value is out of range; the
                message shows the expected format.
        """
        values: dict[str, Any] = {}
        items = [item.strip() for item in str(text).split(",")]
        if not any(items):
            raise FidelityError(f"empty fidelity; {_FORMAT}")
        for item in items:
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep:
                key, value = "base", key
                if value not in schedules.names():
                    raise FidelityError(
                        f"unknown fidelity item {item!r} in {text!r}; {_FORMAT}")
            elif key not in _KEYS and key not in _PRETEXT_KEYS:
                raise FidelityError(f"fidelity {text!r}: unknown key {key!r}; {_FORMAT}")
            if key in values:
                raise FidelityError(f"fidelity {text!r}: {key!r} given twice")
            values[key] = value
        try:
            return cls(**values)
        except ValidationError as exc:
            message = validation_message(f"fidelity {text!r}", exc)
            raise FidelityError(f"{message}; {_FORMAT}") from None

    def __str__(self) -> str:
        """The canonical spelling: base first, then the reductions that are not 1."""
        parts = [self.base]
        parts += [f"{k}={getattr(self, k):g}" for k in ("c", "r", "s")
                  if getattr(self, k) != 1.0]
        if self.e is not None:
            parts.append(f"e={self.e}")
        parts += [f"{k}={getattr(self, k)}" for k in _PRETEXT_KEYS
                  if getattr(self, k) is not None]
        return ",".join(parts)

    @property
    def reduced(self) -> bool:
        """Whether the network or the data are reduced (``c``, ``r`` or ``s`` below 1)."""
        return (self.c, self.r, self.s) != (1.0, 1.0, 1.0)

    def schedule(self, dataset: Any, overrides: dict[str, Any] | None = None
                 ) -> schedules.Schedule:
        """The base schedule for ``dataset`` with ``overrides``, ``e`` and ``r`` applied.

        Args:
            dataset: A data set name or object (as :func:`schedules.get` takes).
            overrides: Schedule fields set for every fidelity (an evaluator's options).

        Raises:
            pydantic.ValidationError: An override is unknown or out of range.
        """
        values = dict(overrides or {})
        schedule = schedules.get(self.base, dataset=dataset, **values)
        if self.e is not None:
            values.update(epochs=self.e, stop_epoch=None)
            if "warmup_epochs" not in values:  # the warm-up keeps its share of the curve
                values["warmup_epochs"] = schedule.warmup_epochs * self.e / schedule.epochs
            schedule = schedules.get(self.base, dataset=dataset, **values)
        if self.r == 1.0:
            return schedule
        # augmentation measured in pixels shrinks with the image
        return schedule.model_copy(update={
            "crop_padding": round(schedule.crop_padding * self.r),
            "cutout": round(schedule.cutout * self.r),
        })

    def genome(self, genome: Genome) -> Genome:
        """``genome`` with its channels scaled by ``c`` (itself when ``c`` is 1)."""
        if self.c == 1.0:
            return genome
        return space_of(genome).scale_channels(genome, self.c)


def reduce_data(data: Dataset, setting: Setting, seed: int = 0) -> Dataset:
    """``data`` at the setting's resolution, with its training set subsampled.

    The training subsample is stratified by class (plainly random for a pretext task)
    and seeded, so every candidate of a search trains on the same images. Validation
    and test sets are resized, never subsampled. Mean and standard deviation stay those
    of the full set: resizing and a stratified sample barely move them.

    Raises:
        FidelityError: The sample ratio leaves fewer images than classes.
    """
    if setting.r == 1.0 and setting.s == 1.0:
        return data
    train_x, train_y = data.train_x, data.train_y
    if setting.s < 1.0:
        from sklearn.model_selection import train_test_split  # 1 s to import: only here

        try:
            # a pretext task reads no label, not even to stratify the sample
            keep, _ = train_test_split(torch.arange(len(train_y)).numpy(),
                                       train_size=setting.s, random_state=seed,
                                       stratify=None if setting.pretext else train_y.numpy())
        except ValueError as exc:
            raise FidelityError(f"s={setting.s:g} of {len(train_y)} training images cannot "
                                f"keep every one of {data.num_classes} classes: {exc}") from None
        keep = torch.from_numpy(keep).sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    size = tuple(max(1, round(side * setting.r)) for side in data.input_shape[1:])
    if setting.r != 1.0:
        train_x = _resized(train_x, size)
    return dataclasses.replace(
        data,
        train_x=train_x,
        train_y=train_y,
        val_x=_resized(data.val_x, size) if setting.r != 1.0 else data.val_x,
        test_x=_resized(data.test_x, size) if setting.r != 1.0 else data.test_x,
    )


def _resized(images: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """uint8 images resized with antialiased bilinear interpolation, in chunks."""
    out = torch.empty((len(images), images.shape[1], *size), dtype=torch.uint8)
    for i in range(0, len(images), 8192):  # bounds the float copy of a large set
        chunk = images[i:i + 8192].float()
        resized = F.interpolate(chunk, size=size, mode="bilinear", antialias=True,
                                align_corners=False)
        out[i:i + 8192] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def pretext_of(fidelity: str | None) -> str | None:
    """The pretext task a training fidelity trains on; None when it trains on labels (or
    is no training fidelity, e.g. a tabular one)."""
    if not fidelity or "pretext" not in fidelity:
        return None
    try:
        return Setting.parse(fidelity).pretext
    except FidelityError:
        return None


def accuracy_label(fidelity: str | None) -> str:
    """What a trial's ``accuracy`` measures: ``"accuracy"``, or e.g.
    ``"accuracy (rotation pretext)"`` for a pretext fidelity."""
    task = pretext_of(fidelity)
    return "accuracy" if task is None else f"accuracy ({task} pretext)"
