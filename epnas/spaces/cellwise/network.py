"""The cellwise network in torch, and its weight-sharing keys.

The builder walks the same shapes as the space's cost model (stage shapes, live
branches, the join rule), so the two agree by construction; the tests check them.
"""

from __future__ import annotations

import torch
from torch import nn

from epnas.costmodel import Shape
from epnas.nn.ops import Head, SamePool, adapter, conv_unit
from epnas.spaces.cellwise.genome import CellwiseGenome, live_branches, parts


class Branch(nn.Module):
    """``partA(h[src1]) + partB(h[src2])``."""

    def __init__(self, index: int, part_a: nn.Module, part_b: nn.Module,
                 src1: int, src2: int) -> None:
        super().__init__()
        self.index, self.part_a, self.part_b = index, part_a, part_b
        self.src1, self.src2 = src1, src2

    def forward(self, outputs: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.part_a(outputs[self.src1]) + self.part_b(outputs[self.src2])


class Cell(nn.Module):
    """Branches in order; the propagated ones are concatenated and projected."""

    def __init__(self, branches: list[Branch], keep: list[int], project: nn.Module) -> None:
        super().__init__()
        self.branches, self.keep, self.project = nn.ModuleList(branches), keep, project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = {0: x}
        for branch in self.branches:
            outputs[branch.index] = branch(outputs)
        kept = [outputs[k] for k in self.keep]
        return self.project(kept[0] if len(kept) == 1 else torch.cat(kept, dim=1))


def _cell(genome: CellwiseGenome, x: Shape) -> Cell:
    live = live_branches(genome)
    shapes = [x]
    branches = []
    for index, br in enumerate(genome.branches, start=1):
        out = x.with_channels(br.channels)
        shapes.append(out)
        if index not in live:
            continue
        modules = []
        for part, src in zip(parts(br.type), (br.src1, br.src2)):
            inp = shapes[src]
            if part == "conv":
                modules.append(conv_unit(inp.c, br.channels, br.width))
            elif part == "none":
                modules.append(adapter(inp, out))
            else:
                modules.append(_seq(SamePool(part, br.pool), adapter(inp, out)))
        branches.append(Branch(index, *modules, br.src1, br.src2))
    keep = [b for b, br in enumerate(genome.branches, start=1) if br.propagate]
    total = x.with_channels(sum(shapes[k].c for k in keep))
    return Cell(branches, keep, adapter(total, x))


def _seq(*modules: nn.Module) -> nn.Module:
    kept = [m for m in modules if not isinstance(m, nn.Identity)]
    if not kept:
        return nn.Identity()
    return kept[0] if len(kept) == 1 else nn.Sequential(*kept)


def build(genome: CellwiseGenome, in_channels: int, stages: list[Shape], cells_per_stage: int,
          num_classes: int) -> nn.Sequential:
    """Stem, ``cells_per_stage`` cells per stage with a stride-2 unit between stages, head."""
    modules: list[nn.Module] = [conv_unit(in_channels, stages[0].c, 3)]
    for s, shape in enumerate(stages):
        if s:
            modules.append(conv_unit(stages[s - 1].c, shape.c, 3, stride=2))
        modules.extend(_cell(genome, shape) for _ in range(cells_per_stage))
    modules.append(Head(stages[-1].c, num_classes))
    return nn.Sequential(*modules)


def sharing_keys(genome: CellwiseGenome, model: nn.Sequential) -> dict[str, dict[str, nn.Module]]:
    """See :meth:`CellwiseSpace.sharing_keys`."""
    modules = list(model)
    units: dict[str, dict[str, nn.Module]] = {"stem": {"": modules[0]}}
    cells = stage = 0
    for module in modules[1:-1]:
        if isinstance(module, Cell):
            for branch in module.branches:
                br = genome.branches[branch.index - 1]
                units[f"cell{cells}/branch/{br.uid}/{br.type}"] = {"": branch}
            units[f"cell{cells}/project"] = {"": module.project}
            cells += 1
        else:  # the stride-2 unit between stages
            stage += 1
            units[f"reduction{stage}"] = {"": module}
    units["head"] = {"": modules[-1]}
    return units
