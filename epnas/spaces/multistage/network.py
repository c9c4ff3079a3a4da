"""The multistage network in torch: stem, stages of inverted-residual blocks, an exit
after every stage.

The cost model (:meth:`MultistageSpace.cost`) counts exactly these modules; the tests
check the two against ``FlopCounterMode`` and the parameter count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from epnas.nn.ops import activation, conv_unit
from epnas.spaces.multistage.genome import Block, MultistageGenome

ACT = "relu"  # the activation of every block, stem and exit conv


def _conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), *([activation(ACT)] if act else []))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> kxk depthwise (stride) -> 1x1 project (+ input).

    ``expand`` is None when the ratio is 1; the residual is added when the block keeps
    the shape (stride 1 and as many output as input channels).
    """

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden, 1) if expand != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class ExitHead(nn.Module):
    """An exit: optional 1x1 conv-BN-ReLU (``conv``), global average pool, ``linear``."""

    def __init__(self, channels: int, num_classes: int, conv: bool) -> None:
        super().__init__()
        self.conv = _conv_bn(channels, channels, 1) if conv else None
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        return self.linear(x.mean((2, 3)))


class MultistageNet(nn.Module):
    """Stem, stages and exits; ``forward`` gives the last exit's logits and
    :meth:`forward_exits` every exit's, from one pass through the body.

    Inputs whose side differs from ``resolution`` are resized to it (bilinear).
    """

    def __init__(self, resolution: int, stem: nn.Sequential,
                 stages: list[list[InvertedResidual]], exits: list[ExitHead]) -> None:
        super().__init__()
        self.resolution = resolution
        self.stem = stem
        self.stages = nn.ModuleList(nn.ModuleList(blocks) for blocks in stages)
        self.exits = nn.ModuleList(exits)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` at ``resolution x resolution``.

        Always called (no branch on the input's size, so torch.fx traces the network for
        the standalone export): at the same size bilinear interpolation returns ``x``.
        """
        return resize(x, self.resolution)

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.resize(x))
        logits = []
        for blocks, head in zip(self.stages, self.exits):
            for block in blocks:
                x = block(x)
            logits.append(head(x))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Every exit is computed, as the cost model counts (and the exported model
        # carries every exit's weights); the earlier ones cost a pool and a linear.
        return self.forward_exits(x)[-1]


def build(genome: MultistageGenome, in_channels: int, num_classes: int) -> MultistageNet:
    """The network of a (validated) genome."""
    o = genome.options
    stem = conv_unit(in_channels, o.stem_channels, 3, ACT)  # type: ignore[attr-defined]
    cin = o.stem_channels  # type: ignore[attr-defined]
    stages, exits = [], []
    for blocks, width, stride in zip(genome.stages, o.widths, o.strides):  # type: ignore[attr-defined]
        stages.append(stage(blocks, cin, width, stride))
        cin = width
        exits.append(ExitHead(width, num_classes, o.exit_conv))  # type: ignore[attr-defined]
    return MultistageNet(genome.resolution, stem, stages, exits)


def stage(blocks: tuple[Block, ...], cin: int, width: int,
          stride: int) -> list[InvertedResidual]:
    """One stage's blocks reading ``cin`` channels: the first has ``stride``."""
    built = []
    for j, block in enumerate(blocks):
        built.append(InvertedResidual(cin, width, block.kernel, block.expand,
                                      stride if j == 0 else 1))
        cin = width
    return built


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """``x`` at ``resolution x resolution`` (bilinear; the same ``x`` at that size)."""
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False)


class StageBlock(nn.Module):
    """One stage as a DNA block (:meth:`MultistageSpace.build_block`): for the first
    stage, the resize to ``resolution`` and the ``stem`` before its ``blocks``."""

    def __init__(self, resolution: int | None, stem: nn.Module | None,
                 blocks: list[InvertedResidual]) -> None:
        super().__init__()
        self.resolution, self.stem = resolution, stem
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution is not None:
            x = resize(x, self.resolution)
        if self.stem is not None:
            x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


def build_block(genome: MultistageGenome, index: int, in_channels: int) -> StageBlock:
    """Stage ``index`` of ``genome`` reading ``in_channels`` (the image's for stage 0,
    which starts with the resize and the stem)."""
    o = genome.options
    if index > 0:
        return StageBlock(None, None, stage(genome.stages[index], in_channels,
                                            o.widths[index], o.strides[index]))  # type: ignore[attr-defined]
    stem = conv_unit(in_channels, o.stem_channels, 3, ACT)  # type: ignore[attr-defined]
    return StageBlock(genome.resolution, stem,
                      stage(genome.stages[0], o.stem_channels, o.widths[0], o.strides[0]))  # type: ignore[attr-defined]
