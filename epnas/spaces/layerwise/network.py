"""The layerwise network in torch, and its weight-sharing keys.

The builder walks the space's shape plan (:meth:`LayerwiseSpace.plan`), the same plan its
cost model walks, so the two agree by construction; the tests check them against each other.
"""

from __future__ import annotations

import torch
from torch import nn

from epnas.costmodel import Shape
from epnas.nn.ops import Head, adapter, conv_unit, down_pool
from epnas.spaces.layerwise.genome import CONV_OPS, POOL_OPS, LayerPlan, LayerwiseGenome


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


def build(in_channels: int, stem_shape: Shape, plans: list[LayerPlan],
          num_classes: int) -> LayerwiseNet:
    """The network of a planned genome (its live layers only)."""
    stem = conv_unit(in_channels, stem_shape.c, 3)
    return LayerwiseNet(stem, _layers(plans), Head(plans[-1].out.c, num_classes))


def build_block(in_channels: int, stem_shape: Shape | None,
                plans: list[LayerPlan]) -> LayerwiseNet:
    """One block (:meth:`LayerwiseSpace.build_block`): the planned layers without a head,
    after the stem when ``stem_shape`` is given; it outputs its last layer's features."""
    stem = nn.Identity() if stem_shape is None else conv_unit(in_channels, stem_shape.c, 3)
    return LayerwiseNet(stem, _layers(plans), nn.Identity())


def _layers(plans: list[LayerPlan]) -> list[LayerBlock]:
    blocks = []
    for p in plans:
        layer = p.layer
        if layer.op in CONV_OPS:
            op: nn.Module = conv_unit(p.inp.c, layer.channels, layer.width, layer.act,
                                     separable=layer.op == "sepconv")
        elif layer.op in POOL_OPS and not (p.inp.h == p.inp.w == 1):
            op = down_pool(layer.op, layer.width)
        else:  # add, or a pool on a 1x1 map
            op = nn.Identity()
        main = skip = None
        if p.skip is not None:
            main = adapter(p.main, p.out)
            skip = adapter(p.skip, p.out)
        blocks.append(LayerBlock(p.index, op, layer.src1, layer.src2, main, skip))
    return blocks


def sharing_keys(genome: LayerwiseGenome,
                 model: LayerwiseNet) -> dict[str, dict[str, nn.Module]]:
    """See :meth:`LayerwiseSpace.sharing_keys`."""
    units: dict[str, dict[str, nn.Module]] = {"stem": {"": model.stem}}
    for block in model.layers:
        # Block indices are 1-based positions in the genome; the uid comes from there.
        layer = genome.layers[block.index - 1]
        units[f"layer/{layer.uid}/{layer.op}"] = {"": block}
    units["head"] = {"": model.head}
    return units
