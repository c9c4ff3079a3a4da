"""The parameter-sharing dictionary: warm-start new candidates from earlier ones' weights.

Weights are grouped per *unit* under a sharing key, (stable unit id, op type) as in
the EPNAS paper, so a layer keeps its key when layers are inserted or removed around
it or when it is scaled. The keys come from the genome's space
(:meth:`epnas.spaces.Space.sharing_keys`); a space without them trains every network
from scratch, which is logged once per space.

Units without parameters or buffers (pools, identities) have no key. Tensor names
inside a unit are those of the unit's modules' ``state_dict``. Shapes that changed
since the weights were stored are bridged by :func:`fit`.

Only convolution and linear weights are shared: BatchNorm's scale, shift and running
statistics stay at their initialisation in every new network. They belong to the
network they were trained in, and carried from step to step through the shared stem
they drifted (a stem BN shift of 17 after 6 steps of the default digits search),
until every new network of the run stayed at chance accuracy.

In a study (:class:`SharedWeights`) the dictionary is merged once per step and saved as
an immutable snapshot file per step, ``RUN_DIR/weights/step-<batch>.pt``; workers
warm-start from the snapshot of the current step (:func:`snapshot`), so every trial of
a step, replayed ones after a resume included, sees the same weights.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from epnas.errors import EpnasError
from epnas.spaces.genome import Genome
from epnas.spaces.registry import space_of

log = logging.getLogger(__name__)

UnitState = dict[str, torch.Tensor]
"""The tensors of one unit, by their name inside the unit."""

MAX_SHAPES = 4
"""Differently shaped versions kept per key (a scaled unit alternates between a few)."""

ACCURACY = "#accuracy"
"""The name, inside a stored unit state, of the accuracy of the model it came from (no
module's ``state_dict`` name starts with ``#``)."""


def _unit_modules(genome: Genome, model: nn.Module) -> dict[str, dict[str, nn.Module]]:
    """Sharing key -> {name prefix inside the unit: module} for every unit of ``model``."""
    return space_of(genome).sharing_keys(genome, model) or {}


@functools.cache
def _warn_unshared(space: str) -> None:
    log.warning("space %r has no sharing keys (Space.sharing_keys): its networks train "
                "without the parameter-sharing dictionary", space)


def batchnorm_names(module: nn.Module) -> set[str]:
    """The ``state_dict`` names of ``module``'s BatchNorm tensors (never shared)."""
    return {f"{name}.{key}" if name else key for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) for key in m.state_dict()}


def _tensors(modules: dict[str, nn.Module]) -> UnitState:
    """The live (storage-sharing) shared tensors of one unit, by unit-local name: its
    modules' ``state_dict`` entries but BatchNorm's."""
    out = {}
    for prefix, module in modules.items():
        norms = batchnorm_names(module)
        out.update({prefix + name: t for name, t in module.state_dict().items()
                    if name not in norms})
    return out


def unit_states(genome: Genome, model: nn.Module) -> dict[str, UnitState]:
    """The weights of a built ``model`` of ``genome`` per sharing key (CPU copies).

    Units without any tensor are left out; a space without sharing keys gives none (and
    says so once).
    """
    units = space_of(genome).sharing_keys(genome, model)
    if units is None:
        _warn_unshared(genome.space)
        return {}
    states = {}
    for key, modules in units.items():
        state = {name: t.detach().to("cpu", copy=True) for name, t in _tensors(modules).items()}
        if state:
            states[key] = state
    return states


def fit(stored: torch.Tensor, shape: torch.Size | tuple[int, ...], fill: float = 0.0
        ) -> torch.Tensor:
    """``stored`` sliced or padded to ``shape``: the leading overlap, ``fill`` elsewhere."""
    out = torch.full(tuple(shape), fill, dtype=stored.dtype)
    block = tuple(slice(0, min(a, b)) for a, b in zip(stored.shape, shape))
    out[block] = stored[block]
    return out


def _distance(a: torch.Size, b: torch.Size) -> int:
    return sum(abs(x - y) for x, y in zip(a, b))


@dataclass
class SharingStats:
    """What :meth:`WeightDictionary.load_into` did, counted in tensors."""

    exact: int = 0  # a stored tensor of the same shape was copied
    resized: int = 0  # the closest stored tensor was sliced/padded
    missing: int = 0  # nothing stored: the tensor keeps its initialisation


def save_atomic(obj: object, path: str | Path, *, sync: bool = False) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`write_atomic`).

    Raises:
        OSError: naming ``path`` and the cause (disk full, read-only, permissions).
    """
    # Serialised in memory first: torch's file writer reports a full disk as a
    # RuntimeError of its own, where a plain write raises OSError with its errno.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), sync=sync)


def write_atomic(path: str | Path, data: bytes | memoryview, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temp file renamed over it, so a kill leaves the
    old file or the new one, never half of one (``sync``: on disk before the rename).

    Raises:
        OSError: naming ``path`` and the cause (disk full, read-only, permissions).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file
        raise


@dataclass
class WeightDictionary:
    """Sharing key -> stored unit states, one per distinct set of shapes, newest first."""

    entries: dict[str, list[UnitState]] = field(default_factory=dict)
    max_shapes: int = MAX_SHAPES

    def load_into(self, genome: Genome, model: nn.Module) -> SharingStats:
        """Copy the stored weights into ``model`` (built from ``genome``) in place."""
        stats = SharingStats()
        with torch.no_grad():
            for key, modules in _unit_modules(genome, model).items():
                stored = self.entries.get(key, [])
                for name, target in _tensors(modules).items():
                    source = self._closest(stored, name, target.shape)
                    if source is None:
                        stats.missing += 1
                    elif source.shape == target.shape:
                        target.copy_(source)
                        stats.exact += 1
                    else:
                        # A zero running variance would scale new channels by
                        # 1/sqrt(eps) in eval mode; 1 is BatchNorm's own initial value.
                        fill = 1.0 if name.endswith("running_var") else 0.0
                        target.copy_(fit(source, target.shape, fill))
                        stats.resized += 1
        return stats

    @staticmethod
    def _closest(stored: list[UnitState], name: str, shape: torch.Size) -> torch.Tensor | None:
        candidates = [s[name] for s in stored if name in s and s[name].dim() == len(shape)]
        # min keeps the first of equals, i.e. the newest entry
        return min(candidates, key=lambda t: _distance(t.shape, shape), default=None)

    def merge(self, step: Iterable[tuple[float, dict[str, UnitState]]]) -> None:
        """Add one EPNAS step's models, given as (accuracy, :func:`unit_states`) pairs.

        Within the step the most accurate model wins each key. Its unit state replaces
        the stored one of the same shapes, and becomes the newest entry, unless that one
        came from a more accurate model: a network that failed to train (finite but
        huge weights) must not overwrite what a good one learned, which every network
        sharing the unit would then inherit (in a digits search, 11 of 100 networks that
        train to 76-99 % from scratch ended at 17-53 % from such weights). Models with a
        non-finite accuracy (diverged) are skipped.
        """
        ranked = sorted((m for m in step if math.isfinite(m[0])), key=lambda m: -m[0])
        winners: dict[str, tuple[float, UnitState]] = {}
        for accuracy, states in ranked:
            for key, state in states.items():
                winners.setdefault(key, (accuracy, state))
        for key, (accuracy, state) in winners.items():
            state = {name: t.detach().to("cpu", copy=True) for name, t in state.items()}
            state[ACCURACY] = torch.tensor(float(accuracy), dtype=torch.float64)
            stored = self.entries.get(key, [])
            same = [s for s in stored if _shapes(s) == _shapes(state)]
            if same and _accuracy(same[0]) > accuracy:
                continue
            kept = [s for s in stored if _shapes(s) != _shapes(state)]
            self.entries[key] = [state, *kept][: self.max_shapes]

    def save(self, path: str | Path) -> None:
        """Write the dictionary atomically (a temp file renamed over ``path``)."""
        save_atomic(self.entries, path, sync=True)

    @classmethod
    def load(cls, path: str | Path, max_shapes: int = MAX_SHAPES) -> WeightDictionary:
        """Read a dictionary written by :meth:`save` (tensors only, never other pickles)."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only rejects anything but plain data and tensors
            raise EpnasError(f"{path}: not a weight dictionary ({exc})") from None
        if not (isinstance(data, dict) and all(
                isinstance(k, str) and isinstance(v, list) and all(_is_state(s) for s in v)
                for k, v in data.items())):
            raise EpnasError(f"{path}: not a weight dictionary (expected key -> list of "
                             f"tensor dicts)")
        return cls(data, max_shapes)


def _shapes(state: UnitState) -> dict[str, torch.Size]:
    return {name: t.shape for name, t in state.items() if name != ACCURACY}


def _accuracy(state: UnitState) -> float:
    """The accuracy of the model a stored state came from (-inf where a dictionary
    written before it was recorded has none)."""
    return float(state[ACCURACY]) if ACCURACY in state else -math.inf


def _is_state(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in value.items())


def snapshot(path: str | Path) -> WeightDictionary:
    """The dictionary saved at ``path``, read once per version of the file (a worker trains
    several trials of a step from the same snapshot)."""
    stat = os.stat(path)
    return _read_snapshot(str(path), (stat.st_ino, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=2)
def _read_snapshot(path: str, stamp: tuple[int, int, int]) -> WeightDictionary:
    return WeightDictionary.load(path)


class SharedWeights:
    """A study's dictionary and its per-step snapshot files in ``directory``.

    The Study merges each step's trials with :meth:`merge` before it closes the step
    and records :attr:`version` with every strategy checkpoint; :meth:`restore` brings
    back the dictionary of a checkpoint, and the steps replayed after it rebuild the
    later snapshots exactly.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.dictionary = WeightDictionary()
        self.version: int | None = None  # the step whose snapshot holds the dictionary

    def path(self, version: int) -> Path:
        return self.directory / f"step-{version:06d}.pt"

    @property
    def snapshot(self) -> Path | None:
        """The file workers warm-start from (None while the dictionary is empty)."""
        return None if self.version is None else self.path(self.version)

    def restore(self, version: int | None) -> None:
        """Go back to the snapshot of step ``version`` (None: the empty dictionary)."""
        if version is None:
            self.dictionary, self.version = WeightDictionary(), None
            return
        path = self.path(version)
        if not path.is_file():
            raise EpnasError(f"{path} is missing: the parameter-sharing dictionary of this "
                             "run cannot be restored; put the file back, or start over with "
                             "--force-new")
        self.dictionary, self.version = WeightDictionary.load(path), version

    def merge(self, step: int, models: Iterable[tuple[float, dict[str, UnitState]]]) -> None:
        """Merge step ``step``'s (accuracy, unit states) and save its snapshot."""
        models = list(models)
        if not models:  # nothing trained: the previous snapshot stays current
            return
        self.dictionary.merge(models)
        self.dictionary.save(self.path(step))
        self.version = step

    def prune(self, keep: Iterable[int | None]) -> None:
        """Delete the snapshots of every step but ``keep`` (and the current one)."""
        wanted = {self.path(v) for v in (*keep, self.version) if v is not None}
        for path in self.directory.glob("step-*.pt"):
            if path not in wanted:
                path.unlink(missing_ok=True)
