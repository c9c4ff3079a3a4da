"""The user's own data: tensors, arrays and torch Datasets become a Dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from epnas.data import Dataset, DatasetError, as_dataset, from_tensors, from_torch


def _images(n: int = 200, shape: tuple[int, ...] = (3, 6, 5)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % 4


def test_tensors_split_into_train_val_test_without_overlap() -> None:
    x, y = _images()
    data = from_tensors(torch.from_numpy(x), torch.from_numpy(y), val_fraction=0.1)
    assert data.input_shape == (3, 6, 5) and data.num_classes == 4
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (144, 16, 40)
    seen = {bytes(img.numpy()) for img in torch.cat([data.train_x, data.val_x, data.test_x])}
    assert len(seen) == 200  # every image lands in exactly one split
    for split in (data.train_y, data.val_y, data.test_y):  # stratified: every class present
        assert set(split.tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(data.mean, data.train_x.float().mean((0, 2, 3)) / 255, rtol=1e-5)


def test_floats_in_unit_range_and_a_given_test_set() -> None:
    x, y = _images(shape=(6, 6))
    data = from_tensors(x / 255.0, y, test=(x[:10], y[:10]), classes="abcd")
    assert data.input_shape == (1, 6, 6) and data.classes == ("a", "b", "c", "d")
    assert len(data.test_y) == 10 and len(data.train_y) + len(data.val_y) == 200
    assert torch.equal(data.test_x, torch.from_numpy(x[:10, None]))


def test_a_torch_dataset_of_pil_images() -> None:
    x, y = _images(n=40, shape=(5, 7, 3))  # HWC, as PIL holds colour images
    items = [(Image.fromarray(img), int(label)) for img, label in zip(x, y)]
    data = from_torch(items, test=items[:8])
    assert isinstance(data, Dataset) and data.input_shape == (3, 5, 7)
    assert as_dataset(data) is data
    assert as_dataset(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))


@pytest.mark.parametrize(("images", "labels", "match"), [
    (np.zeros((4, 2)), np.zeros(4, dtype=int), "shape"),
    (np.full((4, 1, 2, 2), 3.0), np.zeros(4, dtype=int), r"\[0, 1\]"),
    (np.zeros((4, 1, 2, 2)), np.zeros(3, dtype=int), "4 integers"),
    (np.zeros((4, 1, 2, 2)), -np.ones(4, dtype=int), "from 0"),
])
def test_bad_data_is_one_clear_error(images: np.ndarray, labels: np.ndarray, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        from_tensors(images, labels)


def test_unusable_objects_say_what_is_accepted() -> None:
    with pytest.raises(DatasetError, match="torch Dataset"):
        as_dataset(42)
