"""The once-for-all supernet of the ``multistage`` space: one network at the largest
setting whose sub-networks are every genome of the space.

Each dimension is elastic as in once-for-all (Cai et al., 2020):

* **kernel**: a block keeps only the largest kernel's depthwise weights; a smaller
  kernel is the centre crop of the next larger one passed through a learned
  ``k*k x k*k`` linear map (one per block and kernel size, initialised to the identity),
  so 3x3 comes from the transformed 5x5, which comes from the 7x7.
* **depth**: a stage of depth ``d`` runs its first ``d`` blocks.
* **width** (the expansion ratio): a block with ratio ``e`` uses the first
  ``in_channels * e`` hidden channels; :meth:`Supernet.sort_channels` orders them by
  importance (L1 norm of the expand conv's output filters) before the width phase, so a
  narrow block keeps the most important ones. A ratio of 1 skips the expand conv as the
  static block does, its depthwise conv taking the first ``in_channels`` channels.
* **resolution**: the input is resized (bilinear) to the genome's side.

A setting is a :class:`MultistageGenome`; :meth:`Supernet.subnet` turns one into the
static :class:`MultistageNet` the space builds, its weights sliced and transformed from
the supernet, computing the same function.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epnas.nn.ops import conv_unit
from epnas.spaces.multistage.genome import Block, MultistageGenome, MultistageOptions
from epnas.spaces.multistage.network import ACT, ExitHead, MultistageNet, build

SPACE = "multistage"
DIMENSIONS = ("kernel", "depth", "expand", "resolution")
"""The elastic dimensions, as progressive shrinking names them."""


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """``bn`` on the first ``channels`` channels (its running statistics' slices are
    updated in place in training mode)."""
    assert bn.running_mean is not None and bn.running_var is not None
    return F.batch_norm(x, bn.running_mean[:channels], bn.running_var[:channels],
                        bn.weight[:channels], bn.bias[:channels], bn.training,
                        bn.momentum if bn.momentum is not None else 0.0, bn.eps)


def _conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    """The static block's conv -> BN (-> ReLU), so state dicts line up."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), *([nn.ReLU(inplace=True)] if act else []))


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[:channels])
    assert target.num_batches_tracked is not None and source.num_batches_tracked is not None
    target.num_batches_tracked.copy_(source.num_batches_tracked)


class ElasticBlock(nn.Module):
    """An inverted-residual block at its largest kernel and expansion, runnable at any
    smaller (kernel, expand) of the tables."""

    def __init__(self, cin: int, cout: int, stride: int, kernels: Iterable[int],
                 expands: Iterable[int]) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.kernels = tuple(sorted(kernels))
        hidden = cin * max(expands)
        self.expand = _conv_bn(cin, hidden, 1) if max(expands) != 1 else None
        kmax = self.kernels[-1]
        self.depthwise = _conv_bn(hidden, hidden, kmax, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.transforms = nn.ParameterDict({str(k): nn.Parameter(torch.eye(k * k))
                                            for k in self.kernels[:-1]})
        self.residual = stride == 1 and cin == cout

    def hidden(self, block: Block) -> int:
        return self.cin * block.expand

    def kernel_weight(self, kernel: int, channels: int) -> torch.Tensor:
        """The depthwise weights of ``kernel`` for the first ``channels`` channels."""
        w = self.depthwise[0].weight[:channels]
        side = w.shape[-1]
        for k in reversed(self.kernels[:-1]):
            if k < kernel:
                break
            start = (side - k) // 2
            w = w[:, :, start:start + k, start:start + k]
            w = (w.reshape(channels, k * k) @ self.transforms[str(k)]).reshape(channels, 1, k, k)
            side = k
        return w

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        h = self.hidden(block)
        y = x
        if block.expand != 1:
            assert self.expand is not None
            y = F.conv2d(y, self.expand[0].weight[:h])
            y = F.relu(_bn(y, self.expand[1], h))
        y = F.conv2d(y, self.kernel_weight(block.kernel, h), None, self.stride,
                     block.kernel // 2, 1, h)
        y = F.relu(_bn(y, self.depthwise[1], h))
        y = F.conv2d(y, self.project[0].weight[:, :h])
        y = _bn(y, self.project[1], self.cout)
        return x + y if self.residual else y

    @torch.no_grad()
    def copy_into(self, static: nn.Module, block: Block) -> None:
        """Set a static ``InvertedResidual`` of ``block``'s setting to this block's slice."""
        h = self.hidden(block)
        if static.expand is not None:
            assert self.expand is not None
            static.expand[0].weight.copy_(self.expand[0].weight[:h])
            _copy_bn(static.expand[1], self.expand[1], h)
        static.depthwise[0].weight.copy_(self.kernel_weight(block.kernel, h))
        _copy_bn(static.depthwise[1], self.depthwise[1], h)
        static.project[0].weight.copy_(self.project[0].weight[:, :h])
        _copy_bn(static.project[1], self.project[1], self.cout)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order the hidden channels by the L1 norm of the expand conv's output filters
        (largest first); the block's function at its largest setting is unchanged."""
        if self.expand is None:
            return
        order = self.expand[0].weight.abs().sum((1, 2, 3)).argsort(descending=True)
        for seq in (self.expand, self.depthwise):
            seq[0].weight.copy_(seq[0].weight[order])
            bn = seq[1]
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(bn, name)[order])
        self.project[0].weight.copy_(self.project[0].weight[:, order])


class Supernet(nn.Module):
    """The largest network of a ``multistage`` space, with every exit, runnable at the
    setting of any genome of that space (:meth:`forward_exits`).

    Args:
        options: the space options (the tables say what is elastic).
        in_channels: image channels.
        num_classes: classes of every exit.
    """

    def __init__(self, options: MultistageOptions, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.options, self.in_channels, self.num_classes = options, in_channels, num_classes
        o = options
        self.stem = conv_unit(in_channels, o.stem_channels, 3, ACT)
        stages, cin = [], o.stem_channels
        for width, stride in zip(o.widths, o.strides):
            blocks = []
            for j in range(max(o.depths)):
                blocks.append(ElasticBlock(cin, width, stride if j == 0 else 1, o.kernels,
                                           o.expands))
                cin = width
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(ExitHead(w, num_classes, o.exit_conv) for w in o.widths)

    def genome(self, resolution: int, depth: int | list[int],
               blocks: list[list[Block]] | Block) -> MultistageGenome:
        """A genome of this supernet's space: ``blocks`` per stage, or one block
        repeated ``depth`` times in every stage."""
        if isinstance(blocks, Block):
            depths = depth if isinstance(depth, list) else [depth] * self.options.stages
            blocks = [[blocks] * d for d in depths]
        return MultistageGenome(space=SPACE, options=self.options, resolution=resolution,
                                stages=tuple(tuple(stage) for stage in blocks))

    def largest(self) -> MultistageGenome:
        o = self.options
        return self.genome(max(o.resolutions), max(o.depths), Block(max(o.kernels), max(o.expands)))

    def smallest(self, elastic: Iterable[str] = DIMENSIONS) -> MultistageGenome:
        """The smallest setting when only the ``elastic`` dimensions may shrink."""
        o, elastic = self.options, set(elastic)
        pick = {name: (min if name in elastic else max) for name in DIMENSIONS}
        return self.genome(pick["resolution"](o.resolutions), pick["depth"](o.depths),
                           Block(pick["kernel"](o.kernels), pick["expand"](o.expands)))

    def sample(self, rng: np.random.Generator,
               elastic: Iterable[str] = DIMENSIONS) -> MultistageGenome:
        """A uniformly random setting of the ``elastic`` dimensions (the others at their
        largest): each stage's depth, each block's kernel and expansion, the resolution."""
        o, elastic = self.options, set(elastic)

        def draw(name: str, table: tuple[int, ...]) -> int:
            return int(rng.choice(table)) if name in elastic else max(table)

        stages = [[Block(draw("kernel", o.kernels), draw("expand", o.expands))
                   for _ in range(draw("depth", o.depths))] for _ in range(o.stages)]
        return self.genome(draw("resolution", o.resolutions), 0, stages)

    def forward_exits(self, x: torch.Tensor, genome: MultistageGenome) -> list[torch.Tensor]:
        """Every exit's logits of the sub-network ``genome`` (one pass)."""
        r = genome.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        x = self.stem(x)
        logits = []
        for elastic, blocks, head in zip(self.stages, genome.stages, self.exits):
            for module, block in zip(elastic, blocks):
                x = module(x, block)
            logits.append(head(x))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The largest network's last exit."""
        return self.forward_exits(x, self.largest())[-1]

    @torch.no_grad()
    def subnet(self, genome: MultistageGenome) -> MultistageNet:
        """The static network of ``genome`` (the space's builder), its weights sliced and
        transformed from this supernet, on this supernet's device, in eval mode."""
        device = self.stem[0].weight.device
        net = build(genome, self.in_channels, self.num_classes).to(device)
        net.stem.load_state_dict(self.stem.state_dict())
        net.exits.load_state_dict(self.exits.state_dict())
        for elastic, statics, blocks in zip(self.stages, net.stages, genome.stages):
            for module, static, block in zip(elastic, statics, blocks):
                module.copy_into(static, block)
        return net.eval()

    def sort_channels(self) -> None:
        """Order every block's hidden channels by importance (before the width phase)."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Reset ``model``'s BatchNorm statistics and re-estimate them (an exact average over
    ``batches`` of normalised inputs) through every exit; ``model`` ends in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    forward = getattr(model, "forward_exits", model)
    for x in batches:
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
