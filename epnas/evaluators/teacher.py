"""The teacher of block-wise distillation (DNA): a trained network and the modules whose
outputs end its blocks.

A teacher is given as one of:

* a directory holding ``genome.json`` and ``model.pt`` (what ``epnas retrain`` writes to
  ``RUN_DIR/final/``): an epnas network, cut into blocks where its space's
  :meth:`~epnas.spaces.base.Space.blocks` cuts it (layerwise: after its stages' pools);
* ``model.pt`` of a trial (``RUN_DIR/trials/<id>/model.pt``) with ``teacher_genome`` =
  the trial's genome JSON (``epnas export``);
* ``FILE.py:function`` or ``package.module:function``: a function of no arguments that
  returns a trained ``torch.nn.Module``, with ``blocks`` = the names
  (``module.named_modules()``) of the modules whose outputs end each block, in the
  order the forward pass computes them. Its input is the data set's images normalised
  as epnas trains (per-channel mean and standard deviation of the training split).

The last block ends where the features enter the classifier head; block 0 starts at
the network's input.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from epnas.errors import EpnasError
from epnas.spaces.registry import load_genome, space_of

GENOME_FILE = "genome.json"
WEIGHTS_FILE = "model.pt"


class TeacherError(EpnasError):
    """A teacher cannot be loaded or its block outputs are not found."""


class _Enough(Exception):
    """Raised by a hook to end a forward pass once the last wanted feature is known."""


class Teacher:
    """A trained network in eval mode and the names of the modules ending its blocks.

    Args:
        module: the network (its parameters are not trained further).
        outputs: names of ``module``'s sub-modules whose outputs end blocks 0, 1, ...
        source: what it was loaded from, for messages.
    """

    def __init__(self, module: nn.Module, outputs: Sequence[str], source: str) -> None:
        modules = dict(module.named_modules())
        missing = [name for name in outputs if name not in modules]
        if not outputs or missing:
            some = ", ".join(n for n in list(modules)[1:12] if n)
            raise TeacherError(f"teacher {source}: no module named {', '.join(missing)}"
                               if missing else f"teacher {source}: name the modules that end "
                               f"its blocks (blocks=NAME,NAME,...); its modules include: "
                               f"{some}")
        self.module = module.eval().requires_grad_(False)
        self.outputs = tuple(outputs)
        self.source = source
        self._modules = [modules[name] for name in self.outputs]

    def __len__(self) -> int:
        return len(self.outputs)

    @torch.no_grad()
    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """The outputs of blocks ``0..upto`` (None: all) for the batch ``x``; the forward
        pass stops after block ``upto``.

        Raises:
            TeacherError: a block output was not computed, or not in block order.
        """
        last = len(self.outputs) - 1 if upto is None else upto
        seen: list[torch.Tensor] = []

        def hook(index: int) -> Any:
            def record(module: nn.Module, args: Any, output: Any) -> None:
                if index != len(seen):
                    raise TeacherError(f"teacher {self.source}: block output "
                                       f"{self.outputs[index]!r} ran before "
                                       f"{self.outputs[len(seen)]!r}; list the block outputs "
                                       "in the order the forward pass computes them")
                if not isinstance(output, torch.Tensor) or output.dim() != 4:
                    raise TeacherError(f"teacher {self.source}: {self.outputs[index]!r} does "
                                       "not output an N x C x H x W tensor")
                seen.append(output.clone())  # later in-place ops must not change it
                if index == last:
                    raise _Enough
            return record

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._modules[:last + 1])]
        try:
            self.module(x)
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(seen) <= last:
            raise TeacherError(f"teacher {self.source}: the forward pass never computed "
                               f"{self.outputs[len(seen)]!r}")
        return seen

    @torch.no_grad()
    def logits(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The network's float logits for the batch ``x`` (the last exit's, when its
        forward pass returns several), for knowledge distillation.

        Raises:
            TeacherError: its output is not ``N x num_classes``.
        """
        out = self.module(x)
        if isinstance(out, (list, tuple)) and out:
            out = out[-1]
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TeacherError(f"teacher {self.source}: knowledge distillation (kd) needs "
                               f"logits of shape N x {num_classes}, its forward pass gives "
                               f"{shape}")
        return out.float()

    def to(self, device: torch.device | str) -> Teacher:
        self.module.to(device)
        return self


def load_teacher(spec: str, input_shape: tuple[int, int, int], num_classes: int, *,
                 blocks: Sequence[str] | None = None, genome: str | None = None) -> Teacher:
    """Load the teacher ``spec`` (module docs) for inputs ``input_shape``.

    Args:
        blocks: the module names ending each block; required for a function's network,
            optional for an epnas network (default: its space's block outputs).
        genome: the genome JSON file of a ``model.pt`` given alone.

    Raises:
        TeacherError: missing files, a genome of another input, or unknown module names.
    """
    path = Path(spec)
    if path.is_dir() or spec.endswith(".pt"):
        weights = path / WEIGHTS_FILE if path.is_dir() else path
        genome_path = Path(genome) if genome else weights.parent / GENOME_FILE
        for needed in (weights, genome_path):
            if not needed.is_file():
                hint = ("; give the trial's genome with teacher_genome=FILE (epnas export)"
                        if needed == genome_path else "")
                raise TeacherError(f"teacher {spec}: {needed} is missing{hint}")
        try:
            g = load_genome(genome_path.read_text())
        except (OSError, EpnasError) as exc:
            raise TeacherError(f"teacher genome {genome_path}: {exc}") from None
        space = space_of(g)
        model = space.build(g, input_shape, num_classes)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise TeacherError(f"teacher {weights} does not fit {genome_path} at input "
                               f"{'x'.join(map(str, input_shape))}, {num_classes} classes: "
                               f"{first}") from None
        return Teacher(model, list(blocks) if blocks else space.block_outputs(g), spec)
    if ":" in spec:
        factory = _factory(spec)
        module = factory()
        if not isinstance(module, nn.Module):
            raise TeacherError(f"teacher {spec} returned a {type(module).__name__}, not a "
                               "torch.nn.Module")
        return Teacher(module, list(blocks or ()), spec)
    raise TeacherError(f"teacher {spec!r}: give a directory with {GENOME_FILE} and "
                       f"{WEIGHTS_FILE} (epnas retrain's RUN_DIR/final), a model.pt with "
                       "teacher_genome=FILE, or FILE.py:function")


def _factory(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            if not Path(module_name).is_file():
                raise TeacherError(f"teacher {spec}: {module_name} is missing")
            loader = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except TeacherError:
        raise
    except Exception as exc:  # the user's module: say which, whatever it raised
        raise TeacherError(f"teacher {spec}: cannot import {module_name}: "
                           f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TeacherError(f"teacher {spec}: {module_name} has no function {attr!r}")
    return factory
