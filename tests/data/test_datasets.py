"""Tests of ``epnas.data``: every loader reads small files written in the real formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from epnas.data import Dataset, DatasetError, load, names
from epnas.data import datasets as ds

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# --- writers of the real formats ---------------------------------------------------------


def tagged_images(n: int, shape: tuple[int, ...], split: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images whose first pixels spell their index and split, to track them."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0], flat[:, 1], flat[:, 2] = np.arange(n) % 256, np.arange(n) // 256, split
    return x


def ids(x: torch.Tensor) -> set[tuple[int, int]]:
    """The ``(split, index)`` tags of :func:`tagged_images`."""
    flat = x.reshape(len(x), -1).numpy().astype(int)
    return {(int(s), int(lo + 256 * hi)) for lo, hi, s in flat[:, :3]}


def write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None) -> Path:
    """An idx file: magic (0, 0, 0x08, ndim), big-endian int32 dims, then the bytes."""
    header = magic if magic is not None else bytes((0, 0, 0x08, array.ndim))
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(
    directory: Path, *, gz: bool = True, n_train: int = 100, n_test: int = 30
) -> dict[str, np.ndarray]:
    """The four MNIST idx files; labels cycle through the ten classes."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": tagged_images(n_train, (28, 28), split=0),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": tagged_images(n_test, (28, 28), split=1),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 7 % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), array)
    return arrays


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote the CIFAR batches.

    Python 2 ``str`` (every key, label name and the array bytes) is a BINSTRING, and
    numpy arrays are rebuilt by ``numpy.core.multiarray._reconstruct``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is ds._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump(obj: object, path: Path, style: str) -> None:
    with path.open("wb") as f:
        if style == "py2":
            Py2Pickler(f, protocol=2).dump(obj)
        else:  # a Python 3 re-save; protocol 4 is 3.8-3.13's default
            pickle.dump(obj, f, protocol=4)


def cifar_images(n: int, split: int, seed: int) -> np.ndarray:
    """``[n, 3072]`` rows as CIFAR stores them: the red, green and blue planes (tag
    pixels aside) hold 10, 20 and 30, so a wrong reshape shows."""
    x = tagged_images(n, (3, 32, 32), split, seed)
    x[:, 0, 1:, :] = 10  # red plane
    x[:, 1] = 20  # green plane
    x[:, 2] = 30  # blue plane
    return x.reshape(n, 3072)


def write_cifar10(root: Path, style: str = "py2", per_batch: int = 20) -> Path:
    """``root/cifar-10-batches-py/`` with five training batches, the test batch and meta."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names_ = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names_ += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(
        {b"num_cases_per_batch": per_batch, b"label_names": names_, b"num_vis": 3072},
        d / "batches.meta",
        style,
    )
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, member in enumerate(batches):
        split = int(member == "test_batch")
        x = cifar_images(per_batch, split, seed=i)
        if not split:  # tags index the whole training set
            x[:, 0] = (np.arange(per_batch) + i * per_batch) % 256
        labels = [(j + i) % 10 for j in range(per_batch)]
        batch = {
            b"batch_label": f"batch {i + 1} of 5".encode(),
            b"labels": labels,
            b"data": x,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        }
        dump(batch, d / member, style)
    return d


def write_cifar100(root: Path, style: str = "py2", n_train: int = 200, n_test: int = 50) -> Path:
    """``root/cifar-100-python/`` with train, test and meta (fine and coarse labels)."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    fine = [f"fine_{i:02d}".encode() for i in range(100)]
    coarse = [f"coarse_{i:02d}".encode() for i in range(20)]
    dump({b"fine_label_names": fine, b"coarse_label_names": coarse}, d / "meta", style)
    for member, n, split in (("train", n_train, 0), ("test", n_test, 1)):
        batch = {
            b"filenames": [f"{member}_{j}.png".encode() for j in range(n)],
            b"batch_label": f"{member}ing batch 1 of 1".encode(),
            b"fine_labels": [j % 100 for j in range(n)],
            b"coarse_labels": [j % 20 for j in range(n)],
            b"data": cifar_images(n, split, seed=split),
        }
        dump(batch, d / member, style)
    return d


def tar_gz(directory: Path, archive: Path) -> Path:
    """The official archive layout: members named ``<top folder>/<file>``."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def write_images(directory: Path, count: int, *, rgb: bool, suffix: str = ".png") -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(directory)))
    for i in range(count):
        shape = (12, 20, 3) if rgb else (20, 12)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
            directory / f"img{i}{suffix}"
        )


def check_dataset(d: Dataset, shape: tuple[int, int, int], num_classes: int) -> None:
    """Invariants every loaded data set satisfies."""
    assert d.input_shape == shape and d.num_classes == num_classes
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == shape and len(x) == len(y)
        assert y.min() >= 0 and y.max() < num_classes
    mean = (d.train_x.double() / 255).mean(dim=(0, 2, 3))
    std = (d.train_x.double() / 255).std(dim=(0, 2, 3), unbiased=False)
    assert d.mean == pytest.approx(mean.tolist()) and d.std == pytest.approx(std.tolist())


# --- registry, arguments -------------------------------------------------------------------


def test_names_lists_every_loader() -> None:
    assert names() == ["cifar10", "cifar100", "digits", "fashion-mnist", "folder", "mnist"]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DatasetError, match="unknown data set 'imagenet'; known: cifar10, "):
        load("imagenet")


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"image_size": 0}]
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        load("digits", **kwargs)


# --- digits ----------------------------------------------------------------------------------


def test_digits_real_load() -> None:
    d = load("digits")
    check_dataset(d, (1, 8, 8), 10)
    assert d.name == "digits" and d.classes == tuple("0123456789")
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 1797
    assert len(d.test_y) == pytest.approx(0.2 * 1797, abs=10)
    assert len(d.val_y) == pytest.approx(0.1 * (1797 - len(d.test_y)), abs=10)
    # Values 0..16 spread over the bytes: 16 -> 255, and only 17 distinct levels.
    assert d.train_x.max() == 255 and len(torch.unique(d.train_x)) == 17


def test_digits_test_split_is_fixed_and_validation_follows_the_seed() -> None:
    a, b, c = load("digits", seed=0), load("digits", seed=0), load("digits", seed=1)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x) and torch.equal(a.test_y, c.test_y)
    x, y = a.train_val()
    assert torch.equal(x, torch.cat([a.train_x, a.val_x])) and len(y) == len(x)


def test_validation_split_is_stratified_and_can_be_empty() -> None:
    d = load("digits", val_fraction=0.25)
    train = torch.bincount(d.train_y, minlength=10).double()
    val = torch.bincount(d.val_y, minlength=10).double()
    assert torch.allclose(
        val / (train + val), torch.full((10,), 0.25, dtype=torch.float64), atol=0.02
    )
    assert len(load("digits", val_fraction=0.0).val_y) == 0


def test_image_size_resizes_and_gets_its_own_cache_entry(cache_dir: Path) -> None:
    assert load("digits", image_size=16).input_shape == (1, 16, 16)
    assert load("digits").input_shape == (1, 8, 8)
    assert len(list((cache_dir / "datasets").glob("digits-*"))) == 2


# --- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    d = load("mnist", tmp_path / "mnist")
    check_dataset(d, (1, 28, 28), 10)
    assert d.classes == tuple("0123456789")
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (90, 10, 30)
    train, val, test = ids(d.train_x), ids(d.val_x), ids(d.test_x)
    assert not train & val and train | val == {(0, i) for i in range(100)}
    assert test == {(1, i) for i in range(30)}
    # Labels travel with their images.
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y)):
        index = x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()
        assert torch.equal(y, torch.from_numpy(arrays["train-labels-idx1-ubyte"][index]).long())
    assert np.array_equal(d.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(d.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_search_path_and_name_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "store" / "mnist")
    assert len(load("mnist", tmp_path / "store").test_y) == 30  # root/<name>/ is searched
    monkeypatch.setenv("EPNAS_DATA", str(tmp_path / "store"))
    assert len(load("mnist").test_y) == 30


@pytest.mark.parametrize(
    ("member", "damage", "message"),
    [
        ("train-images-idx3-ubyte.gz", "magic", "not an idx file of unsigned bytes"),
        ("t10k-labels-idx1-ubyte.gz", "truncate", "holds 29 data bytes but its header"),
        ("train-labels-idx1-ubyte.gz", "count", "holds 100 images but"),
        ("t10k-images-idx3-ubyte.gz", "gzip", "cannot read or decompress"),
    ],
)
def test_malformed_idx_names_the_file(
    tmp_path: Path, member: str, damage: str, message: str
) -> None:
    arrays = write_mnist(tmp_path)
    path, array = tmp_path / member, arrays[member.removesuffix(".gz")]
    if damage == "magic":
        write_idx(path, array, magic=b"\x00\x00\x0d\x03")  # float32, not bytes
    elif damage == "truncate":
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))
    elif damage == "count":
        write_idx(path, array[:-1])
    else:
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match=message) as info:
        load("mnist", tmp_path)
    assert member in str(info.value)


def test_missing_idx_files_say_what_and_how(tmp_path: Path) -> None:
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DatasetError) as info:
        load("fashion-mnist", tmp_path / "partial")
    text = str(info.value)
    assert "\n" not in text and str(tmp_path / "partial") in text
    for f in ds._IDX_FILES:
        assert f in text
    assert "apt-get install dataset-fashion-mnist" in text and "--data DIR" in text


def test_fashion_mnist_real_load() -> None:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed: apt-get install dataset-fashion-mnist")
    d = load("fashion-mnist")
    assert d.input_shape == (1, 28, 28) and d.classes[0] == "T-shirt/top"
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (54000, 6000, 10000)
    assert torch.bincount(d.val_y).tolist() == [600] * 10
    assert d.mean[0] == pytest.approx(0.286, abs=0.001)


# --- CIFAR pickles -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["py2", "py3"])
@pytest.mark.parametrize("layout", ["top", "folder", "archive-in-dir", "archive-path"])
def test_cifar10(tmp_path: Path, layout: str, style: str) -> None:
    folder = write_cifar10(tmp_path / "src", style)
    archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    root = {
        "top": tmp_path / "src",
        "folder": folder,
        "archive-in-dir": tmp_path,
        "archive-path": archive,
    }[layout]
    if layout == "archive-in-dir":
        os.rename(tmp_path / "src", tmp_path / "elsewhere")
    d = load("cifar10", root, val_fraction=0.2)
    check_dataset(d, (3, 32, 32), 10)
    assert d.classes[:2] == ("airplane", "automobile") and d.classes[-1] == "truck"
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (80, 20, 20)
    assert not ids(d.train_x) & ids(d.val_x) and len(ids(d.train_x) | ids(d.val_x)) == 100
    # Rows are red, green, blue planes: the reshape must keep them apart.
    assert (d.test_x[:, 0, 1:] == 10).all() and (d.test_x[:, 1] == 20).all()
    assert (d.test_x[:, 2] == 30).all()
    assert d.test_y.tolist() == [(j + 5) % 10 for j in range(20)]


@pytest.mark.parametrize("archived", [False, True])
def test_cifar100_uses_fine_labels(tmp_path: Path, archived: bool) -> None:
    folder = write_cifar100(tmp_path)
    root = tar_gz(folder, tmp_path / "cifar-100-python.tar.gz") if archived else folder
    d = load("cifar100", root)
    check_dataset(d, (3, 32, 32), 100)
    assert d.classes[0] == "fine_00" and d.classes[99] == "fine_99"
    assert d.test_y.tolist() == list(range(50))
    assert len(d.val_y) == 20 and len(d.train_y) == 180


class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.mark.parametrize("member", ["data_batch_3", "batches.meta"])
def test_malicious_pickle_is_refused(tmp_path: Path, member: str) -> None:
    folder = write_cifar10(tmp_path)
    sentinel = tmp_path / "pwned"
    dump({b"data": Exploit(f"touch {sentinel}"), b"labels": []}, folder / member, "py3")
    with pytest.raises(DatasetError, match=r"refusing to load global (posix|nt)\.system") as info:
        load("cifar10", folder)
    assert member in str(info.value) and not sentinel.exists()


def test_unpickler_refuses_any_other_global() -> None:
    payload = pickle.dumps({b"data": io.BytesIO(b"")}, protocol=4)
    with pytest.raises(DatasetError, match=r"refusing to load global _io\.BytesIO"):
        ds._unpickle(payload, "x")


def test_missing_cifar_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load("cifar10", tmp_path)
    text = str(info.value)
    for expected in (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py/",
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        "batches.meta",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "--data DIR",
    ):
        assert expected in text


@pytest.mark.parametrize("damage", ["not-a-tar", "missing-member", "wrong-content"])
def test_malformed_cifar(tmp_path: Path, damage: str) -> None:
    folder = write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    if damage == "not-a-tar":
        archive.write_bytes(b"\x1f\x8b garbage")
        match = "not a readable CIFAR-10 archive"
    elif damage == "missing-member":
        (folder / "test_batch").unlink()
        match = "lacks cifar-10-batches-py/test_batch"
    else:
        dump(
            {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, folder / "test_batch", "py2"
        )
        match = r"test_batch: 'data' is not a uint8 array of \[N, 3072\]"
    if damage != "not-a-tar":
        tar_gz(folder, archive)
    with pytest.raises(DatasetError, match=match):
        load("cifar10", archive)


# --- a folder of images ------------------------------------------------------------------------


def test_folder_of_grayscale_pngs_carves_a_fixed_test_split(tmp_path: Path) -> None:
    for c in ("cat", "dog", "eel"):
        write_images(tmp_path / "imgs" / c, 10, rgb=False)
    d = load("folder", tmp_path / "imgs")
    check_dataset(d, (1, 32, 32), 3)
    assert d.classes == ("cat", "dog", "eel")
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (22, 2, 6)
    assert torch.bincount(d.test_y).tolist() == [2, 2, 2]
    other = load("folder", tmp_path / "imgs", seed=5, image_size=16)
    assert other.input_shape == (1, 16, 16) and torch.equal(other.test_y, d.test_y)


def test_folder_with_splits_mixed_modes_becomes_rgb(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "a", 6, rgb=True, suffix=".jpg")
    write_images(tmp_path / "train" / "b", 6, rgb=False, suffix=".png")
    write_images(tmp_path / "test" / "b", 3, rgb=True, suffix=".JPEG")
    d = load("folder", tmp_path, image_size=8, val_fraction=0.5)
    check_dataset(d, (3, 8, 8), 2)
    assert (len(d.train_y), len(d.val_y)) == (6, 6) and d.test_y.tolist() == [1, 1, 1]
    gray = d.train_x[d.train_y == 1]
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no directory given; pass --data DIR holding DIR/<"):
        load("folder")
    with pytest.raises(DatasetError, match="no class directories"):
        load("folder", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no png/jpg/jpeg image"):
        load("folder", tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"holds one class directory \(empty\); a "
                                           "classifier needs at least two classes"):
        load("folder", tmp_path)
    write_images(tmp_path / "other", 2, rgb=False)
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
        load("folder", tmp_path)


# --- cache -----------------------------------------------------------------------------------


def test_cache_is_hit_then_invalidated_by_a_changed_source(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "m")
    first = load("mnist", tmp_path / "m")

    def fail(*args: object) -> None:
        raise AssertionError("the source was read despite a valid cache entry")

    with monkeypatch.context() as m:
        m.setattr(ds, "_read_idx", fail)
        again = load("mnist", tmp_path / "m")
    assert torch.equal(first.train_x, again.train_x) and first.mean == again.mean

    labels = tmp_path / "m" / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.full(30, 9, np.uint8))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert load("mnist", tmp_path / "m").test_y.tolist() == [9] * 30
    assert len(list((cache_dir / "datasets").glob("mnist-*"))) == 1  # stale entry removed


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path, cache_dir: Path) -> None:
    write_mnist(tmp_path)
    first = load("mnist", tmp_path)
    (entry,) = (cache_dir / "datasets").glob("mnist-*")
    (entry / "train_x.npy").write_bytes((entry / "train_x.npy").read_bytes()[:200])
    assert torch.equal(load("mnist", tmp_path).train_x, first.train_x)
    assert (entry / "train_x.npy").stat().st_size > 200  # replaced by a complete entry


def test_unwritable_cache_warns_and_still_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write data cache"):
        d = load("digits", cache_dir=blocker)
    assert d.num_classes == 10
