"""The NAS-Bench-201 network in torch, as published, and its weight-sharing keys."""

from __future__ import annotations

import torch
from torch import nn

from epnas.costmodel import Shape
from epnas.nn.ops import Head
from epnas.spaces.nb201.genome import EDGES


class NB201Cell(nn.Module):
    """Node j = sum of its non-``none`` incoming edges (zeros when it has none)."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.edges = [(src, dst) for (src, dst), op in zip(EDGES, ops) if op != "none"]
        self.ops = nn.ModuleList(_op(op, channels) for op in ops if op != "none")

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


def _op(op: str, channels: int) -> nn.Module:
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


def build(ops: tuple[str, ...], in_channels: int, stages: list[Shape], cells_per_stage: int,
          num_classes: int) -> nn.Sequential:
    """Stem (conv + BN), the stages of cells with a residual reduction between them, the
    final BN-ReLU and the head."""
    c = stages[0].c
    modules: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False),
                                nn.BatchNorm2d(c)]
    for s, shape in enumerate(stages):
        if s:
            modules.append(ResidualReduction(stages[s - 1].c, shape.c))
        modules.extend(NB201Cell(ops, shape.c) for _ in range(cells_per_stage))
    modules += [nn.BatchNorm2d(stages[-1].c), nn.ReLU(), Head(stages[-1].c, num_classes)]
    return nn.Sequential(*modules)


def sharing_keys(ops: tuple[str, ...], model: nn.Sequential) -> dict[str, dict[str, nn.Module]]:
    """See :meth:`NB201Space.sharing_keys`."""
    modules = list(model)
    # stem = conv + BN; head = final BN + ReLU + classifier (see build)
    units: dict[str, dict[str, nn.Module]] = {"stem": {"0.": modules[0], "1.": modules[1]}}
    cells = stage = 0
    for module in modules[2:-3]:
        if isinstance(module, NB201Cell):
            for op, edge in zip(module.ops, module.edges):
                e = EDGES.index(edge)
                units[f"cell{cells}/edge{e}/{ops[e]}"] = {"": op}
            cells += 1
        else:  # the residual reduction between stages
            stage += 1
            units[f"reduction{stage}"] = {"": module}
    units["head"] = {"bn.": modules[-3], "fc.": modules[-1]}
    return units
