"""Genome -> ``torch.nn.Module`` for every built-in space.

Each builder walks the same shape plan as the space's cost model, so the two agree
by construction on shapes and are checked against each other by the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from epnas.costmodel import Shape, adapt, check_input_shape
from epnas.nn.ops import Head, SamePool, adapter, conv_unit, down_pool

if TYPE_CHECKING:
    from epnas.spaces.cellwise import CellwiseSpace
    from epnas.spaces.genome import Genome
    from epnas.spaces.layerwise import LayerwiseSpace
    from epnas.spaces.nb201 import NB201Space


def build(genome: Genome, input_shape: tuple[int, int, int] = (3, 32, 32),
          num_classes: int = 10) -> nn.Module:
    """The PyTorch network of ``genome`` for inputs ``input_shape`` = (C, H, W)."""
    from epnas.spaces.registry import space_of

    return space_of(genome).build(genome, check_input_shape(input_shape), num_classes)


class LayerBlock(nn.Module):
    """One layerwise layer: ``op(h[src1])``, plus the adapted skip ``h[src2]``."""

    def __init__(self, index: int, op: nn.Module, src1: int, src2: int,
                 main: nn.Module | None, skip: nn.Module | None) -> None:
        super().__init__()
        self.index, self.op, self.src1, self.src2 = index, op, src1, src2
        self.main, self.skip = main, skip

    def forward(self, outputs: dict[int, torch.Tensor]) -> torch.Tensor:
        y = self.op(outputs[self.src1])
        if self.skip is not None:
            y = self.main(y) + self.skip(outputs[self.src2])
        return y


class LayerwiseNet(nn.Module):
    def __init__(self, stem: nn.Module, layers: list[LayerBlock], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.layers, self.head = stem, nn.ModuleList(layers), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = {0: self.stem(x)}
        for layer in self.layers:
            outputs[layer.index] = layer(outputs)
        return self.head(outputs[self.layers[-1].index])


def build_layerwise(space: LayerwiseSpace, genome: Genome, input_shape: tuple[int, int, int],
                    num_classes: int) -> LayerwiseNet:
    stem_shape, plans = space.plan(genome, input_shape)  # type: ignore[arg-type]
    stem = conv_unit(input_shape[0], stem_shape.c, 3)
    blocks = []
    for p in plans:
        layer = p.layer
        if layer.op in ("conv", "sepconv"):
            op: nn.Module = conv_unit(p.inp.c, layer.channels, layer.width, layer.act,
                                     separable=layer.op == "sepconv")
        elif layer.op in ("maxpool", "avgpool") and not (p.inp.h == p.inp.w == 1):
            op = down_pool(layer.op, layer.width)
        else:  # add, or a pool on a 1x1 map
            op = nn.Identity()
        main = skip = None
        if p.skip is not None:
            main = _adapter(p.main, p.out)
            skip = _adapter(p.skip, p.out)
        blocks.append(LayerBlock(p.index, op, layer.src1, layer.src2, main, skip))
    return LayerwiseNet(stem, blocks, Head(plans[-1].out.c, num_classes))


def _adapter(source: Shape, target: Shape) -> nn.Module:
    return adapter(adapt(source, target), target.c)


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


def _cell(genome: Genome, x: Shape) -> Cell:
    from epnas.spaces.cellwise import live_branches, parts

    live = live_branches(genome)  # type: ignore[arg-type]
    shapes = [x]
    branches = []
    for index, br in enumerate(genome.branches, start=1):  # type: ignore[attr-defined]
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
                modules.append(_adapter(inp, out))
            else:
                modules.append(_seq(SamePool(part, br.pool), _adapter(inp, out)))
        branches.append(Branch(index, *modules, br.src1, br.src2))
    keep = [b for b, br in enumerate(genome.branches, start=1) if br.propagate]  # type: ignore[attr-defined]
    total = x.with_channels(sum(shapes[k].c for k in keep))
    return Cell(branches, keep, _adapter(total, x))


def _seq(*modules: nn.Module) -> nn.Module:
    kept = [m for m in modules if not isinstance(m, nn.Identity)]
    if not kept:
        return nn.Identity()
    return kept[0] if len(kept) == 1 else nn.Sequential(*kept)


def build_cellwise(space: CellwiseSpace, genome: Genome, input_shape: tuple[int, int, int],
                   num_classes: int) -> nn.Module:
    stages = space.stage_shapes(input_shape)
    modules: list[nn.Module] = [conv_unit(input_shape[0], stages[0].c, 3)]
    for s, shape in enumerate(stages):
        if s:
            modules.append(conv_unit(stages[s - 1].c, shape.c, 3, stride=2))
        modules.extend(_cell(genome, shape) for _ in range(space.options.cells_per_stage))
    modules.append(Head(stages[-1].c, num_classes))
    return nn.Sequential(*modules)


class NB201Cell(nn.Module):
    """Node j = sum of its non-``none`` incoming edges (zeros when it has none)."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        from epnas.spaces.nb201 import EDGES

        super().__init__()
        self.edges = [(src, dst) for (src, dst), op in zip(EDGES, ops) if op != "none"]
        self.ops = nn.ModuleList(_nb201_op(op, channels) for op in ops if op != "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            terms = [op(nodes[src]) for op, (src, dst) in zip(self.ops, self.edges)
                     if dst == node]
            if not terms:
                nodes.append(torch.zeros_like(x))
            else:
                total = terms[0]
                for term in terms[1:]:
                    total = total + term
                nodes.append(total)
        return nodes[3]


def _nb201_op(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    k = int(op[-1])  # nor_conv_1x1 / nor_conv_3x3: ReLU -> conv -> BN
    return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, k, 1, k // 2, bias=False),
                         nn.BatchNorm2d(channels))


class ResidualReduction(nn.Module):
    """NAS-Bench-201's ResNet basic block with stride 2 between stages."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(cout))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def build_nb201(space: NB201Space, genome: Genome, input_shape: tuple[int, int, int],
                num_classes: int) -> nn.Module:
    stages = space.stage_shapes(input_shape)
    c = stages[0].c
    modules: list[nn.Module] = [nn.Conv2d(input_shape[0], c, 3, 1, 1, bias=False),
                                nn.BatchNorm2d(c)]
    for s, shape in enumerate(stages):
        if s:
            modules.append(ResidualReduction(stages[s - 1].c, shape.c))
        modules.extend(NB201Cell(genome.ops, shape.c)  # type: ignore[attr-defined]
                       for _ in range(space.options.cells_per_stage))
    modules += [nn.BatchNorm2d(stages[-1].c), nn.ReLU(), Head(stages[-1].c, num_classes)]
    return nn.Sequential(*modules)
