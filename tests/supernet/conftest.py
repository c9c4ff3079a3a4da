"""A tiny supernet setting shared by the supernet tests: two stages on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from epnas.data import Dataset, load
from epnas.spaces.multistage import MultistageOptions
from epnas.supernet import Supernet, save_supernet
from epnas.supernet.training import SupernetOptions, describe

TINY = {"stages": 2, "widths": (8, 8), "strides": (1, 2), "stem_channels": 8,
        "depths": (1, 2), "kernels": (3, 5), "expands": (1, 2), "resolutions": (6, 8)}


def subset(data: Dataset, train: int, val: int) -> Dataset:
    """The first ``train`` training and ``val`` validation images of ``data``."""
    return Dataset(name=data.name, train_x=data.train_x[:train], train_y=data.train_y[:train],
                   val_x=data.val_x[:val], val_y=data.val_y[:val], test_x=data.test_x[:8],
                   test_y=data.test_y[:8], classes=data.classes, mean=data.mean, std=data.std)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load("digits")


def save_tiny(out: Path, digits: Dataset | None = None) -> Path:
    """An untrained tiny supernet for digits, saved in ``out`` as training leaves one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        supernet = Supernet(MultistageOptions(**TINY), 1, 10)
    meta = describe(supernet, digits or load("digits"), "digits", None, SupernetOptions())
    save_supernet(supernet, meta, out)
    return out


@pytest.fixture(scope="session")
def supernet_dir(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Path:
    """:func:`save_tiny`'s supernet (read-only for tests)."""
    return save_tiny(tmp_path_factory.mktemp("supernet"), digits)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread (threads only contend for a loaded machine's cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
