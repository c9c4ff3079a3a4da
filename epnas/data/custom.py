"""The user's own data as a :class:`~epnas.data.Dataset`: tensors, arrays or a torch Dataset.

Images become uint8 ``[N, C, H, W]`` tensors like every named data set, so they train with
the same batched augmentation. Floating-point images are read as values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from epnas.data.datasets import (
    _TEST_SEED,
    Dataset,
    DatasetError,
    _histogram,
    _moments,
    _stratified_split,
)

DEFAULT_NAME = "custom"


def from_tensors(
    images: Any,
    labels: Any,
    *,
    test: tuple[Any, Any] | None = None,
    classes: Sequence[str] | None = None,
    name: str = DEFAULT_NAME,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """A data set from image and label tensors (or NumPy arrays).

    Args:
        images: ``[N, C, H, W]`` or ``[N, H, W]`` (one channel); uint8, or floats in [0, 1].
        labels: ``[N]`` integer class indices from 0.
        test: ``(images, labels)`` of a separate test set; None carves ``test_fraction``
            of ``images`` out (stratified, fixed seed) so search never sees it.
        classes: class names, indexed by label (default ``"0"``, ``"1"``, ...).
        name: recorded in the run's configuration (resume checks it).
        val_fraction: share of each class held out for validation (what search selects on).
        test_fraction: share carved out for testing when ``test`` is None.
        seed: seed of the validation split.

    Raises:
        DatasetError: shapes, dtypes, labels or fractions that cannot make a data set.
    """
    x, y = _images(images, "images"), _labels(labels, "labels", len(images))
    num_classes = int(y.max()) + 1 if y.size else 0
    if test is None:
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
        kept, held = _stratified_split(y, test_fraction, _TEST_SEED)
        test_x, test_y, x, y = x[held], y[held], x[kept], y[kept]
    else:
        test_x = _images(test[0], "test images")
        test_y = _labels(test[1], "test labels", len(test_x))
        if test_x.shape[1:] != x.shape[1:]:
            raise DatasetError(f"test images have shape {tuple(test_x.shape[1:])}, "
                               f"training images {tuple(x.shape[1:])}")
        num_classes = max(num_classes, int(test_y.max()) + 1 if test_y.size else 0)
    names = tuple(str(c) for c in classes) if classes is not None else \
        tuple(str(i) for i in range(num_classes))
    if len(names) < num_classes or len(names) < 2:
        raise DatasetError(f"{len(names)} class names for labels 0..{num_classes - 1}: "
                           "give at least one name per label and at least two classes")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train_idx, val_idx = _stratified_split(y, val_fraction, seed)
    mean, std = _moments(_histogram(x[train_idx]))
    return Dataset(
        name=name,
        train_x=torch.from_numpy(x[train_idx]),
        train_y=torch.from_numpy(y[train_idx]),
        val_x=torch.from_numpy(x[val_idx]),
        val_y=torch.from_numpy(y[val_idx]),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=names,
        mean=mean,
        std=std,
    )


def from_torch(dataset: Any, *, test: Any = None, **kwargs: Any) -> Dataset:
    """A data set from a map-style ``torch.utils.data.Dataset`` of ``(image, label)``.

    Images may be tensors or arrays (``[C, H, W]`` or ``[H, W]``) or PIL images; every
    item is read once. ``test`` is another such data set; ``kwargs`` as :func:`from_tensors`.
    """
    x, y = _stack(dataset, "dataset")
    if test is not None:
        kwargs["test"] = _stack(test, "test dataset")
    return from_tensors(x, y, **kwargs)


def as_dataset(data: Any, **kwargs: Any) -> Dataset:
    """``data`` as a Dataset: a Dataset as is, ``(images, labels)``, or a torch Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return from_tensors(*data, **kwargs)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return from_torch(data, **kwargs)
    raise DatasetError(f"cannot use a {type(data).__name__} as data: give a data set name, "
                       "an epnas.data.Dataset, (images, labels) tensors or a torch Dataset")


def _images(images: Any, what: str) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or min(x.shape) < 1:
        raise DatasetError(f"{what} must be [N, C, H, W] or [N, H, W], got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{what} must be uint8 or floats in [0, 1], got {x.dtype}")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise DatasetError(f"floating-point {what} must lie in [0, 1] (got {low:.3g} to "
                           f"{high:.3g}): give raw pixels; epnas normalises them itself")
    return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))


def _labels(labels: Any, what: str, n: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{what} must be {n} integers (one per image), "
                           f"got shape {y.shape} of {y.dtype}")
    if n and y.min() < 0:
        raise DatasetError(f"{what} must be class indices from 0, got {int(y.min())}")
    return y.astype(np.int64)


def _stack(dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        if not isinstance(image, torch.Tensor | np.ndarray):  # a PIL image
            image = np.asarray(image)
            image = image.transpose(2, 0, 1) if image.ndim == 3 else image
        images.append(np.asarray(image.numpy() if isinstance(image, torch.Tensor) else image))
        labels.append(int(label))
    if not images:
        raise DatasetError(f"the {what} is empty")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DatasetError(f"the {what}'s images differ in shape ({sorted(shapes)[:3]}...): "
                           "resize them to one shape first")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
