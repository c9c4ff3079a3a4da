"""Image classification data sets as uint8 tensors, read from their official files.

Every loader turns its source (scikit-learn's digits, MNIST-style idx files, the
CIFAR python pickles, or a folder of images) into the official train and test arrays
once, then caches them as ``.npy`` files; later loads memory-map the cache and only
carve the validation split. The validation split comes from the official training set
(stratified, seeded); the test set is the official one, or, where a source has none, a
stratified 20% carved with a fixed seed so that every run reports on the same images.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import uuid
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from epnas.errors import EpnasError

try:  # numpy >= 2 moved the pickle helpers; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["Dataset", "DatasetError", "load", "names"]

# Bump when the cached arrays' layout or a loader's output changes.
_CACHE_VERSION = 1
# Sources without an official test split (digits, a flat folder) get this fixed one.
_TEST_FRACTION = 0.2
_TEST_SEED = 20240229
_SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
_DEFAULT_FOLDER_SIZE = 32


class DatasetError(EpnasError, ValueError):
    """A data set is unknown, missing or malformed; the message says what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set held in memory as uint8 tensors.

    Attributes:
        name: The loader name, e.g. ``"cifar10"``.
        train_x: Training images, uint8 ``[N, C, H, W]`` (validation carved out).
        train_y: Training labels, int64 ``[N]``.
        val_x: Validation images, carved from the official training set with a seed.
        val_y: Validation labels.
        test_x: The official test images; only for final reports.
        test_y: Test labels.
        classes: Class names, indexed by label; empty for data without labels (an
            image folder without class directories; its labels are all 0).
        mean: Per-channel mean of ``train_x`` scaled to [0, 1].
        std: Per-channel standard deviation of ``train_x`` scaled to [0, 1].
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``images`` as the networks see them: scaled to [0, 1] and standardised
        with this data set's ``mean`` and ``std``, on the images' device."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return images.float().div(255.0).sub_(mean).div_(std)

    def train_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and validation sets concatenated, for the final retraining."""
        return torch.cat([self.train_x, self.val_x]), torch.cat([self.train_y, self.val_y])

    @cached_property
    def fingerprint(self) -> str:
        """A digest of every split's images and labels (and the normalisation): two data
        sets with the same name but other images, such as a subset, differ in it."""
        digest = hashlib.sha256(repr((self.name, self.classes, self.mean, self.std)).encode())
        for tensor in (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x,
                       self.test_y):
            digest.update(repr(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, train={len(self.train_y)}, "
            f"val={len(self.val_y)}, test={len(self.test_y)})"
        )


@dataclass(frozen=True)
class _Raw:
    """The official splits, before the validation carve."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    """A located data set: what identifies it, the files it is read from, its reader."""

    identity: str  # where it lives (and any version): one cache entry per identity
    files: tuple[Path, ...]  # their size and mtime invalidate the cache
    read: Callable[[], _Raw]


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_LOCATORS)


def load(
    name: str,
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load a data set by name, from the cache when its source files are unchanged.

    Args:
        name: One of :func:`names`.
        root: Where the files are: a directory holding them (or ``<name>/`` holding
            them) or, for CIFAR, the ``.tar.gz``. ``None`` searches
            ``$EPNAS_DATA/<name>`` then ``/usr/share/datasets/<name>`` (Debian's
            ``dataset-fashion-mnist`` installs there). ``digits`` is bundled with
            scikit-learn and ignores it.
        val_fraction: Share of each class of the official training set held out
            for validation.
        seed: Seed of the validation split; the test split never depends on it.
        image_size: Resize images to ``image_size`` squared; ``None`` keeps the
            native size (32 for ``folder``).
        cache_dir: Cache directory; default ``$EPNAS_CACHE`` or ``~/.cache/epnas``.

    Returns:
        The data set with train, validation and test splits.

    Raises:
        DatasetError: The name is unknown, or the files are missing or malformed.
    """
    key = name.lower().replace("_", "-")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    source = _locate(key, root, image_size)
    raw, train_hist = _cached(key, source, image_size, _cache_root(cache_dir))

    train_idx, val_idx = _stratified_split(raw.train_y, val_fraction, seed)
    val_x = raw.train_x[val_idx]
    mean, std = _moments(train_hist - _histogram(val_x))
    return Dataset(
        name=key,
        train_x=torch.from_numpy(raw.train_x[train_idx]),
        train_y=torch.from_numpy(raw.train_y[train_idx]),
        val_x=torch.from_numpy(val_x),
        val_y=torch.from_numpy(raw.train_y[val_idx]),
        test_x=torch.from_numpy(np.array(raw.test_x)),
        test_y=torch.from_numpy(np.array(raw.test_y)),
        classes=raw.classes,
        mean=mean,
        std=std,
    )


def locate(name: str, root: str | Path | None = None, *, image_size: int | None = None) -> None:
    """Check that :func:`load` can find data set ``name`` (arguments as there), cheaply:
    its files are found, not read.

    Raises:
        DatasetError: The name is unknown or the files are missing (what and how to fix).
    """
    _locate(name.lower().replace("_", "-"), root, image_size)


def _locate(key: str, root: str | Path | None, image_size: int | None) -> _Source:
    if key not in _LOCATORS:
        raise DatasetError(f"unknown data set {key!r}; known: {', '.join(names())}")
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    return _LOCATORS[key](Path(root).expanduser() if root is not None else None, image_size)


# --- splits and statistics -------------------------------------------------------------


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(kept, held_out)``; ``fraction`` of the samples are held out.

    Each class gives its share of the total; the largest fractional shares (ties in a
    seeded random order) round up, so small classes still add up to the fraction. A
    class always keeps at least one sample, so none vanishes from training.
    """
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(y, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(np.int64)
    extra = int(fraction * y.size + 0.5) - int(take.sum())
    order = np.lexsort((rng.random(labels.size), take - quota))
    take[order[:extra]] += 1
    take = np.minimum(take, counts - 1)
    held = [np.empty(0, dtype=np.int64)]
    for label, k in zip(labels, take, strict=True):
        held.append(rng.choice(np.flatnonzero(y == label), size=k, replace=False))
    held_out = np.sort(np.concatenate(held))
    keep = np.ones(y.size, dtype=bool)
    keep[held_out] = False
    return np.flatnonzero(keep), held_out


def _histogram(x: np.ndarray) -> np.ndarray:
    """Per-channel counts of each byte value, ``[C, 256]`` int64."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    counts = [torch.bincount(t[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]
    return torch.stack(counts).numpy()


def _moments(hist: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] from byte histograms, exactly."""
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1)
    mean = hist @ values / n
    var = np.maximum(hist @ values**2 / n - mean**2, 0.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var))


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    """Bilinear (antialiased) resize of ``[N, C, H, W]`` uint8 images to ``size`` squared."""
    if size is None or x.shape[-2:] == (size, size):
        return x
    out = np.empty((*x.shape[:2], size, size), dtype=np.uint8)
    step = 4096  # bounds the float copy to a few hundred MB
    for i in range(0, len(x), step):
        chunk = torch.from_numpy(np.ascontiguousarray(x[i : i + step])).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True)
        out[i : i + step] = chunk.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def _carve_test(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> _Raw:
    train, test = _stratified_split(y, _TEST_FRACTION, _TEST_SEED)
    return _Raw(x[train], y[train], x[test], y[test], classes)


# --- cache -----------------------------------------------------------------------------

_ARRAYS = ("train_x", "train_y", "test_x", "test_y", "train_hist")


def cache_home() -> Path:
    """epnas's cache folder: ``$EPNAS_CACHE``, else ``~/.cache/epnas``."""
    return Path(os.environ.get("EPNAS_CACHE") or Path.home() / ".cache" / "epnas").expanduser()


def _cache_root(cache_dir: str | Path | None) -> Path:
    return (cache_home() if cache_dir is None else Path(cache_dir).expanduser()) / "datasets"


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _cached(
    name: str, source: _Source, image_size: int | None, root: Path
) -> tuple[_Raw, np.ndarray]:
    """The source's arrays and training histogram, from the cache or freshly read.

    An entry is named ``<name>-<source key>-<fingerprint>``: a changed file gives a
    new fingerprint, and the stale entries of the same source key are removed.
    """
    try:
        stats = [
            (str(p.resolve()), st.st_size, st.st_mtime_ns)
            for p, st in ((p, p.stat()) for p in source.files)
        ]
    except OSError as e:
        raise DatasetError(f"{name}: cannot read {e.filename}: {e.strerror}") from e
    prefix = f"{name}-{_digest(_CACHE_VERSION, source.identity, image_size)}-"
    entry = root / (prefix + _digest(stats))
    hit = _read_entry(entry)
    if hit is not None:
        return hit

    raw = source.read()
    if image_size is not None:
        raw = _Raw(
            _resize(raw.train_x, image_size),
            raw.train_y,
            _resize(raw.test_x, image_size),
            raw.test_y,
            raw.classes,
        )
    hist = _histogram(raw.train_x)
    _write_entry(root, entry, prefix, raw, hist)
    return raw, hist


def _read_entry(entry: Path) -> tuple[_Raw, np.ndarray] | None:
    """Memory-mapped arrays of a complete cache entry, or ``None`` when absent or broken."""
    try:
        classes = tuple(json.loads((entry / "meta.json").read_text())["classes"])
        arrays = {a: np.load(entry / f"{a}.npy", mmap_mode="r") for a in _ARRAYS}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    hist = np.asarray(arrays.pop("train_hist"))
    return _Raw(**arrays, classes=classes), hist


def _write_entry(root: Path, entry: Path, prefix: str, raw: _Raw, hist: np.ndarray) -> None:
    """Write an entry atomically (a rename of a finished directory); warn on failure.

    Concurrent loaders may race: the first rename wins and the others drop their copy.
    """
    tmp = root / f".tmp-{entry.name}-{uuid.uuid4().hex}"
    try:
        tmp.mkdir(parents=True)
        arrays = {
            "train_x": raw.train_x,
            "train_y": raw.train_y,
            "test_x": raw.test_x,
            "test_y": raw.test_y,
            "train_hist": hist,
        }
        for a, value in arrays.items():
            np.save(tmp / f"{a}.npy", value)
        (tmp / "meta.json").write_text(json.dumps({"classes": list(raw.classes)}))
        try:
            tmp.rename(entry)
        except OSError:
            if _read_entry(entry) is not None:
                return  # another process wrote it first
            shutil.rmtree(entry)  # a damaged entry: replace it
            tmp.rename(entry)
        for stale in root.glob(prefix + "*"):
            if stale != entry:
                shutil.rmtree(stale, ignore_errors=True)
    except OSError as e:
        warnings.warn(f"epnas: cannot write data cache {entry}: {e}", stacklevel=4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- locating sources ------------------------------------------------------------------


def _search_dirs(name: str, root: Path | None) -> list[Path]:
    if root is not None:
        return [root, root / name]
    dirs = [_SYSTEM_DATA_DIR / name]
    if os.environ.get("EPNAS_DATA"):
        dirs.insert(0, Path(os.environ["EPNAS_DATA"]).expanduser() / name)
    return dirs


def _where(dirs: Sequence[Path]) -> str:
    return " or ".join(str(d) for d in dirs)


def _digits(root: Path | None, image_size: int | None) -> _Source:
    # The version from the package metadata: importing scikit-learn takes over a second,
    # and every worker process of a search locates its data (the cache spares the read).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return _Source(f"sklearn-{version('scikit-learn')}", (), _read_digits)
    except PackageNotFoundError:
        raise DatasetError("the digits data set comes with scikit-learn, which is not "
                           "installed: pip install scikit-learn") from None


def _read_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # A pixel counts the set bits (0..16) of a 4x4 block; spread it over the byte range.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    return _carve_test(x, y, tuple(str(c) for c in bunch.target_names))


# --- MNIST-style idx files -------------------------------------------------------------

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IDX_HELP = {
    "mnist": "download the four files from https://yann.lecun.com/exdb/mnist/ (or the mirror "
    "https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion-mnist": "apt-get install dataset-fashion-mnist, or download the four files "
    "from https://github.com/zalandoresearch/fashion-mnist",
}


def _idx(name: str, classes: tuple[str, ...], root: Path | None, image_size: int | None) -> _Source:
    dirs = _search_dirs(name, root)
    for d in dirs:
        files = [next((p for p in (d / f"{f}.gz", d / f) if p.is_file()), None) for f in _IDX_FILES]
        if all(files):
            paths = tuple(p for p in files if p is not None)
            return _Source(f"idx:{d.resolve()}", paths, partial(_read_idx_set, paths, classes))
    expected = ", ".join(f"{f}[.gz]" for f in _IDX_FILES)
    raise DatasetError(
        f"{name}: expected {expected} in {_where(dirs)}; "
        f"{_IDX_HELP[name]}, then pass --data DIR (or set EPNAS_DATA=DIR holding {name}/)"
    )


def _read_idx_set(paths: Sequence[Path], classes: tuple[str, ...]) -> _Raw:
    splits = []
    for images, labels in (paths[:2], paths[2:]):
        x, y = _read_idx(images, 3), _read_idx(labels, 1)
        if len(x) != len(y):
            raise DatasetError(f"{images} holds {len(x)} images but {labels} {len(y)} labels")
        if y.size and y.max() >= len(classes):
            raise DatasetError(f"{labels}: label {y.max()} is not below {len(classes)}")
        splits.append((x[:, None], y.astype(np.int64)))
    (train_x, train_y), (test_x, test_y) = splits
    return _Raw(train_x, train_y, test_x, test_y, classes)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx array of unsigned bytes, validated against its header; gzip is detected."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read or decompress it: {e}") from e
    header = 4 + 4 * ndim
    # The magic number is 0, 0, type (0x08: unsigned byte), number of dimensions.
    if len(data) < header or data[:4] != bytes((0, 0, 0x08, ndim)):
        raise DatasetError(
            f"{path}: not an idx file of unsigned bytes with {ndim} dimension(s) "
            f"(magic {data[:4].hex()}, expected 000008{ndim:02x})"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(dims)):
        raise DatasetError(
            f"{path}: holds {len(data) - header} data bytes but its header "
            f"declares dimensions {'x'.join(map(str, dims))}"
        )
    # A copy, because torch refuses to share the read-only buffer of ``bytes``.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


# --- CIFAR python pickles --------------------------------------------------------------


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    archive: str  # the official download's file name
    folder: str  # its top directory
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: str
    names_key: str


_CIFAR = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        labels_key="labels",
        names_key="label_names",
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
    ),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, strings, numbers and numpy arrays.

    The CIFAR batches are pickles, and a pickle can call any importable function;
    these three globals are all a numpy array needs, so nothing else is resolved.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays, "
                "dicts, lists, strings and numbers are accepted"
            ) from None


def _unpickle(data: bytes, origin: str) -> dict[str, object]:
    """A CIFAR dict with str keys; the Python 2 era files need ``encoding="bytes"``."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a malformed pickle can raise nearly anything
        raise DatasetError(f"{origin}: not a CIFAR python batch ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{origin}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar(name: str, root: Path | None, image_size: int | None) -> _Source:
    spec = _CIFAR[name]
    members = (*spec.train, spec.test, spec.meta)
    candidates = _search_dirs(name, root)
    for c in candidates:
        for d in (c, c / spec.folder):
            paths = tuple(d / m for m in members)
            if all(p.is_file() for p in paths):
                read = partial(_read_cifar_dir, spec, paths)
                return _Source(f"{name}:dir:{d.resolve()}", paths, read)
        archive = c if c.is_file() else c / spec.archive
        if archive.is_file():
            read = partial(_read_cifar_archive, spec, archive)
            return _Source(f"{name}:tar:{archive.resolve()}", (archive,), read)
    url = f"https://www.cs.toronto.edu/~kriz/{spec.archive}"
    raise DatasetError(
        f"{name}: expected {spec.archive}, or {spec.folder}/ holding {', '.join(members)}, "
        f"in {_where(candidates)}; download {url} (the python version), then pass --data "
        f"DIR (or set EPNAS_DATA=DIR holding {name}/)"
    )


def _read_cifar_dir(spec: _CifarSpec, paths: Sequence[Path]) -> _Raw:
    try:
        blobs = {p.name: (p.read_bytes(), str(p)) for p in paths}
    except OSError as e:
        raise DatasetError(f"cannot read {e.filename}: {e.strerror}") from e
    return _decode_cifar(spec, blobs)


def _read_cifar_archive(spec: _CifarSpec, archive: Path) -> _Raw:
    """Read the batches straight out of the archive in one sequential pass."""
    wanted = {*spec.train, spec.test, spec.meta}
    blobs: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in wanted and base not in blobs:
                    f = tar.extractfile(member)
                    if f is not None:
                        blobs[base] = (f.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: not a readable {spec.title} archive ({e})") from e
    missing = sorted(wanted - blobs.keys())
    if missing:
        raise DatasetError(
            f"{archive}: lacks {', '.join(f'{spec.folder}/{m}' for m in missing)}; "
            f"is it the python version of {spec.title}?"
        )
    return _decode_cifar(spec, blobs)


def _decode_cifar(spec: _CifarSpec, blobs: dict[str, tuple[bytes, str]]) -> _Raw:
    meta_data, meta_origin = blobs[spec.meta]
    label_names = _unpickle(meta_data, meta_origin).get(spec.names_key)
    if not isinstance(label_names, list) or not label_names:
        raise DatasetError(f"{meta_origin}: no {spec.names_key!r} list")
    classes = tuple(n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in label_names)

    def batch(member: str) -> tuple[np.ndarray, np.ndarray]:
        data, origin = blobs[member]
        d = _unpickle(data, origin)
        x, labels = d.get("data"), d.get(spec.labels_key)
        if not (
            isinstance(x, np.ndarray)
            and x.dtype == np.uint8
            and x.ndim == 2
            and x.shape[1] == 3 * 32 * 32
        ):
            raise DatasetError(f"{origin}: 'data' is not a uint8 array of [N, 3072] pixels")
        try:
            y = np.asarray(labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{origin}: {spec.labels_key!r} is not a list of ints") from e
        if len(y) != len(x) or (y.size and (y.min() < 0 or y.max() >= len(classes))):
            raise DatasetError(
                f"{origin}: {spec.labels_key!r} needs {len(x)} labels in 0..{len(classes) - 1}"
            )
        # Rows hold the red, green and blue planes of a 32x32 image in turn.
        return x.reshape(-1, 3, 32, 32), y

    train = [batch(m) for m in spec.train]
    test_x, test_y = batch(spec.test)
    return _Raw(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        classes,
    )


# --- a folder of images ----------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_GRAY_MODES = {"1", "L", "LA"}


def _folder(root: Path | None, image_size: int | None) -> _Source:
    """Labelled: ``DIR/<class>/*`` or ``DIR/train/<class>/*`` + ``DIR/test/<class>/*``.
    Without labels (for pretext fidelities): every image directly in ``DIR`` and no
    subdirectory; its data set has no classes (``Dataset.classes == ()``)."""
    layout = ("DIR/<class>/*.png|jpg|jpeg, or DIR/train/<class>/... and DIR/test/<class>/..., "
              "or, without labels, DIR/*.png|jpg|jpeg")
    if root is None or not root.is_dir():
        given = "no directory given" if root is None else f"{root} is not a directory"
        raise DatasetError(f"folder: {given}; pass --data DIR holding {layout}")
    size = image_size or _DEFAULT_FOLDER_SIZE
    loose = _images_in(root)
    if loose and not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        # no class directories: one unnamed group, read as unlabelled
        return _Source(f"folder:{root.resolve()}:{size}:unlabelled", tuple(loose),
                       partial(_read_folder, {"": loose}, {}, size))
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = _scan(root / "train", layout), _scan(root / "test", layout)
        unknown = sorted(test.keys() - train.keys())
        if unknown:
            raise DatasetError(
                f"folder: classes {', '.join(unknown)} of {root}/test are missing from {root}/train"
            )
    else:
        train, test = _scan(root, layout), {}
    if len(train) < 2:  # every network would score 100 %: nothing to search for
        where = root / "train" if test else root
        raise DatasetError(f"folder: {where} holds one class directory ({next(iter(train))}); "
                           "a classifier needs at least two classes: give each class its "
                           "own directory")
    files = tuple(p for group in (train, test) for paths in group.values() for p in paths)
    read = partial(_read_folder, train, test, size)
    return _Source(f"folder:{root.resolve()}:{size}", files, read)


def _scan(directory: Path, layout: str) -> dict[str, list[Path]]:
    """Image paths per class directory, sorted so labels and order are reproducible."""
    classes: dict[str, list[Path]] = {}
    for sub in sorted(directory.iterdir()):
        if sub.is_dir() and not sub.name.startswith("."):
            classes[sub.name] = _images_in(sub)
            if not classes[sub.name]:
                raise DatasetError(f"folder: class directory {sub} holds no png/jpg/jpeg image")
    if not classes:
        raise DatasetError(f"folder: no class directories in {directory}; expected {layout}")
    return classes


def _images_in(directory: Path) -> list[Path]:
    """The png/jpg/jpeg files directly in ``directory``, sorted."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _read_folder(train: dict[str, list[Path]], test: dict[str, list[Path]], size: int) -> _Raw:
    try:
        from PIL import Image, ImageOps
    except ImportError as e:
        raise DatasetError("folder data sets need Pillow: pip install pillow") from e
    classes = tuple(c for c in train if c)  # "": the images of an unlabelled folder
    label = {c: i for i, c in enumerate(train)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    for group in (train, test):
        for c, paths in group.items():
            for p in paths:
                try:
                    with Image.open(p) as im:
                        mode = "L" if im.mode in _GRAY_MODES else "RGB"
                        # Crop to the square's aspect, then scale: no distortion.
                        im = ImageOps.fit(im.convert(mode), (size, size), Image.Resampling.BILINEAR)
                        images.append(np.asarray(im, dtype=np.uint8))
                except (OSError, ValueError) as e:
                    raise DatasetError(f"folder: cannot read image {p}: {e}") from e
                labels.append(label[c])
    # Grayscale only when every image is; otherwise gray ones are repeated into RGB.
    if all(a.ndim == 2 for a in images):
        x = np.stack(images)[:, None]
    else:
        x = np.stack([np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in images])
        x = x.transpose(0, 3, 1, 2).copy()
    y = np.asarray(labels, dtype=np.int64)
    if not test:
        return _carve_test(x, y, classes)
    n_train = sum(len(paths) for paths in train.values())
    return _Raw(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


_LOCATORS: dict[str, Callable[[Path | None, int | None], _Source]] = {
    "digits": _digits,
    "mnist": partial(_idx, "mnist", tuple(str(d) for d in range(10))),
    "fashion-mnist": partial(_idx, "fashion-mnist", _FASHION_CLASSES),
    "cifar10": partial(_cifar, "cifar10"),
    "cifar100": partial(_cifar, "cifar100"),
    "folder": _folder,
}
