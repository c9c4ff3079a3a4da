"""Self-supervised pretext tasks (UnNAS): labels made from the images themselves.

A pretext task turns a batch of uint8 images ``[N, C, H, W]`` into a batch of inputs of
the same shape and one class label per image, on the batch's device and with the
randomness of a ``torch.Generator`` (the same state gives the same batch). The class
labels of the data set are never read: a network trained on a pretext task learns from
the images alone, and its pretext accuracy rates its architecture (Liu et al., *Are
Labels Necessary for Neural Architecture Search?*, 2020).

* ``rotation``: each image turned by 0, 90, 180 or 270 degrees (counter-clockwise);
  the class is the turn. Square images only.
* ``jigsaw``: the image cut into a ``grid`` x ``grid`` array of tiles (pixels past the
  last whole tile stay in place), the tiles shuffled by one of a fixed set of
  permutations; the class is the permutation. The set is chosen once, greedily, for
  maximal minimal Hamming distance between its members (Noroozi & Favaro, 2016) with
  a fixed seed, so every run uses the same set.
* ``colorization``: colour data only. The input is the image's luminance (BT.601),
  repeated into every channel so the network keeps the colour data's input shape; the
  class is the image's dominant colour: the hue sector (``bins`` equal sectors of the
  chroma plane) holding the most chroma, or a last *grey* class when the mean chroma
  is below :data:`GREY_CHROMA`. This is colorization at image level, a classification
  like the searched networks' own heads (per-pixel colour would need a dense decoder
  they do not have): to name the colour from luminance a network must recognise what
  the object is (sky, grass, skin), which is what the task measures.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch

from epnas.data.datasets import Dataset, DatasetError

__all__ = ["GREY_CHROMA", "TASKS", "Colorization", "Jigsaw", "Pretext", "Rotation",
           "make", "permutations", "pretext_data"]

TASKS = ("rotation", "jigsaw", "colorization")
"""The pretext tasks, by name."""

GREY_CHROMA = 0.04
"""Mean chroma (in [0, 1] units of the BT.601 colour differences) below which an image
counts as grey for ``colorization``."""

VAL_SEED = 20201101
"""Seeds the pretext transform of the validation and test images: every candidate is
rated on the same rotated/shuffled images, whatever the training seed."""

_LUMA = (0.299, 0.587, 0.114)


class Pretext(ABC):
    """A pretext task: ``task(images, generator) -> (inputs, labels)``.

    Attributes:
        name: the task's name (one of :data:`TASKS`).
        classes: the names of its classes; the network's head has this many outputs.
    """

    name: str
    classes: tuple[str, ...]

    @abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (uint8, shape of ``x``) and int64 labels for a uint8 batch ``x``."""


class Rotation(Pretext):
    """Predict which of four right-angle turns an image was given."""

    name = "rotation"
    classes = ("0", "90", "180", "270")

    def __call__(self, x: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        turns = torch.randint(0, 4, (len(x),), generator=generator, device=x.device)
        out = x.clone()
        for k in (1, 2, 3):
            chosen = turns == k
            out[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
        return out, turns


@functools.cache
def permutations(tiles: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct permutations of ``range(tiles)``, far apart in Hamming distance.

    Greedy: start from a seeded random permutation, then add the permutation whose
    smallest Hamming distance to those chosen is largest (ties drawn with the seed).

    Returns:
        int64 ``[count, tiles]``; row ``p`` lists, for every tile position, the tile
        placed there.
    """
    total = math.factorial(tiles)
    if not 1 <= count <= total:
        raise ValueError(f"{count} permutations of {tiles} tiles: choose 1 to {total}")
    every = np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(tiles))),
                        dtype=np.int8, count=tiles * total).reshape(total, tiles)
    # same[j][v]: which permutations put tile v at position j; a permutation's Hamming
    # distance to p is tiles less the sum of same[j][p[j]] (9 vector adds, not 9! x 9)
    same = [[(every[:, j] == v).astype(np.int8) for v in range(tiles)] for j in range(tiles)]

    def distance(p: np.ndarray) -> np.ndarray:
        return tiles - sum(same[j][v] for j, v in enumerate(p.tolist()))

    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(total))]
    nearest = distance(every[chosen[0]])
    for _ in range(count - 1):
        nearest[chosen] = -1
        far = np.flatnonzero(nearest == nearest.max())
        pick = int(far[rng.integers(len(far))])
        chosen.append(pick)
        nearest = np.minimum(nearest, distance(every[pick]))
    return every[chosen].astype(np.int64)


class Jigsaw(Pretext):
    """Predict which permutation of a fixed set shuffled the image's tiles.

    Args:
        shape: ``(C, H, W)`` of the images.
        grid: tiles per side (2 or 3).
        count: size of the permutation set (at most ``(grid * grid)!``).
        seed: seed of the set's choice.
    """

    name = "jigsaw"

    def __init__(self, shape: tuple[int, int, int], grid: int, count: int, seed: int = 0) -> None:
        _, h, w = shape
        self.grid, self.perms = grid, torch.from_numpy(permutations(grid * grid, count, seed))
        self.classes = tuple(str(p) for p in range(count))
        th, tw = h // grid, w // grid
        rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
        inside = (rows < grid * th) & (cols < grid * tw)
        position = (rows // th).clamp(max=grid - 1) * grid + (cols // tw).clamp(max=grid - 1)
        source = self.perms[:, position]  # [P, H, W]: the tile each pixel is taken from
        src_rows = source // grid * th + rows % th
        src_cols = source % grid * tw + cols % tw
        index = torch.where(inside, src_rows * w + src_cols, rows * w + cols)
        self._index = index.reshape(count, h * w)  # [P, H*W]: flat source pixel
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.device not in self._on:
            self._on[x.device] = self._index.to(x.device)
        n, c, h, w = x.shape
        chosen = torch.randint(0, len(self.perms), (n,), generator=generator, device=x.device)
        index = self._on[x.device][chosen][:, None, :].expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w), chosen


class Colorization(Pretext):
    """Predict the dominant colour of an image (hue sector, or grey) from its luminance.

    Args:
        bins: hue sectors; the classes are these and *grey*.
    """

    name = "colorization"

    def __init__(self, bins: int) -> None:
        self.bins = bins
        width = 360 / bins
        self.classes = (*(f"hue {i * width:g}-{(i + 1) * width:g}" for i in range(bins)),
                        "grey")

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The class of every image of a uint8 RGB batch (no randomness)."""
        rgb = x.float() / 255.0
        luma = sum(k * rgb[:, i] for i, k in enumerate(_LUMA))
        cb, cr = rgb[:, 2] - luma, rgb[:, 0] - luma  # [N, H, W]
        chroma = torch.hypot(cb, cr)
        hue = torch.atan2(cr, cb).add(math.pi).div(2 * math.pi)  # [0, 1]
        sector = (hue * self.bins).long().clamp_(max=self.bins - 1)
        mass = torch.zeros(len(x), self.bins, device=x.device)
        mass.scatter_add_(1, sector.flatten(1), chroma.flatten(1))
        grey = chroma.flatten(1).mean(1) < GREY_CHROMA
        return torch.where(grey, self.bins, mass.argmax(1))

    def __call__(self, x: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = x.float()
        luma = sum(k * rgb[:, i] for i, k in enumerate(_LUMA)).round_().clamp_(0, 255)
        inputs = luma.to(torch.uint8)[:, None].expand_as(x).contiguous()
        return inputs, self.targets(x)


def default_grid(shape: tuple[int, int, int]) -> int:
    """3 x 3 tiles where both sides are at least 48 pixels (16-pixel tiles), else 2 x 2."""
    return 3 if min(shape[1:]) >= 48 else 2


def make(name: Literal["rotation", "jigsaw", "colorization"], shape: tuple[int, int, int], *,
         grid: int | None = None, perms: int | None = None, bins: int | None = None,
         seed: int = 0) -> Pretext:
    """The pretext task ``name`` for images of ``shape`` ``(C, H, W)``.

    Args:
        name: one of :data:`TASKS`.
        shape: the images' shape.
        grid: jigsaw tiles per side (default :func:`default_grid`).
        perms: jigsaw permutation set size (default all 24 for 2 x 2, 100 for 3 x 3).
        bins: colorization hue sectors (default 8, plus grey).
        seed: seed of the jigsaw permutation set.

    Raises:
        DatasetError: the task does not fit the images (one line saying why).
    """
    c, h, w = shape
    if name == "rotation":
        if h != w:
            raise DatasetError(f"pretext=rotation needs square images, got {h}x{w}: "
                               "resize them (folder: --data-opt image_size) or use jigsaw")
        return Rotation()
    if name == "jigsaw":
        grid = grid or default_grid(shape)
        if min(h, w) < grid:
            raise DatasetError(f"pretext=jigsaw: {h}x{w} images cannot be cut into "
                               f"{grid}x{grid} tiles")
        most = math.factorial(grid * grid)
        count = perms or min(most, 100)
        if count > most:
            raise DatasetError(f"pretext=jigsaw: perms={count} is more than the {most} "
                               f"permutations of {grid}x{grid} tiles")
        return Jigsaw(shape, grid, count, seed)
    if name == "colorization":
        if c != 3:
            raise DatasetError(f"pretext=colorization needs colour (3-channel) images; this "
                               f"data set has {c} channel{'s' * (c != 1)}: use rotation or jigsaw")
        return Colorization(bins or 8)
    raise DatasetError(f"unknown pretext task {name!r}; known: {', '.join(TASKS)}")


def pretext_data(data: Dataset, task: Pretext) -> Dataset:
    """``data`` for training on ``task``: no labels, validation and test sets transformed.

    The training labels are replaced by zeros (the trainer asks ``task`` for each
    batch's labels, :func:`epnas.train.train`); the validation and test images are
    transformed once, with :data:`VAL_SEED`, and labelled by the task.
    """
    generator = torch.Generator().manual_seed(VAL_SEED)
    val_x, val_y = task(data.val_x, generator)
    test_x, test_y = task(data.test_x, generator)
    return dataclasses.replace(data, train_y=torch.zeros_like(data.train_y), val_x=val_x,
                               val_y=val_y, test_x=test_x, test_y=test_y, classes=task.classes)
