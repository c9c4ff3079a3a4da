"""Analytic cost model primitives: parameters, FLOPs, bytes moved and compute intensity.

Every space's ``cost`` hook walks its genome with a :class:`Tally` (``epnas.cost(genome)``
asks the genome's space), without building torch modules; the results agree with the
built network (see ``tests/test_costmodel.py``):

* ``params``: exactly ``sum(p.numel() for p in model.parameters())``.
* ``flops``: floating-point operations of one forward pass at batch 1, counted as
  ``torch.utils.flop_counter.FlopCounterMode`` does: 2 per multiply-add of every
  convolution and linear layer (batch norm, activations, pooling and sums are free).
* ``bytes``: data moved by one forward pass at batch 1 in float32:
  ``4 * (params + activations read + activations written)``. Every *operation* reads
  each of its inputs once and writes its output once, where an operation is: a fused
  convolution unit (conv [+ pointwise conv] + batch norm + activation), a pooling, a
  1x1 projection, an elementwise sum (reads every addend), a concatenation, the
  global average pool and the classifier. Identities move nothing.
* ``intensity``: ``flops / bytes``, the paper's compute intensity (FLOPs per byte).
* ``memory`` (an estimate of peak training memory at a batch size B, float32):
  ``4 * (3 * params + B * activations)``, where ``activations`` counts the elements
  every operation writes for one image (autograd keeps about that much for the
  backward pass) and ``3 * params`` holds weights, gradients and momentum.

Resolution rule shared with the builder: every downsampling (a pool layer, a
stride-2 reduction) maps ``H x W`` to ``ceil(H/2) x ceil(W/2)``, so a 1x1 map stays
1x1. When two tensors of different shape are summed, the result takes the channels
of the main (Src1) input and the smaller resolution; the finer input is reduced by
average pooling with kernel = stride = the resolution ratio (ceil mode), then
projected by a 1x1 convolution + batch norm if its channels differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FLOAT_BYTES = 4
DEFAULT_BATCH = 128  # batch size of the ``memory`` estimate when none is given


@dataclass(frozen=True)
class Cost:
    """Analytic costs of one network at batch 1 (see the module docstring)."""

    params: int
    flops: int
    bytes: int
    activations: int = 0  # elements written per image (for the memory estimate)

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def mflops(self) -> float:
        return self.flops / 1e6

    def memory(self, batch_size: int = DEFAULT_BATCH) -> float:
        """Estimated peak training memory in bytes at ``batch_size`` (module docstring)."""
        return FLOAT_BYTES * (3 * self.params + batch_size * self.activations)

    def as_dict(self, batch_size: int = DEFAULT_BATCH) -> dict[str, float]:
        """The cost metrics: params, flops, bytes, intensity, memory (at ``batch_size``)."""
        return {"params": self.params, "flops": self.flops, "bytes": self.bytes,
                "intensity": self.intensity, "memory": self.memory(batch_size)}


@dataclass(frozen=True)
class Shape:
    """A feature map: channels, height, width, and how many times it was halved."""

    c: int
    h: int
    w: int
    level: int = 0

    @property
    def elements(self) -> int:
        return self.c * self.h * self.w

    def halved(self) -> Shape:
        return Shape(self.c, -(-self.h // 2), -(-self.w // 2), self.level + 1)

    def with_channels(self, c: int) -> Shape:
        return Shape(c, self.h, self.w, self.level)

    def same_size(self, other: Shape) -> bool:
        return (self.h, self.w) == (other.h, other.w)


@dataclass(frozen=True)
class Adapt:
    """How one input of a sum is brought to the sum's shape."""

    pool: int  # average-pool kernel = stride; 1 means no pooling
    project_from: int | None  # input channels of a 1x1 projection, None means none


def join_shape(main: Shape, other: Shape) -> Shape:
    """The shape of ``main + other``: main's channels at the coarser resolution."""
    coarse = other if other.level > main.level else main
    return Shape(main.c, coarse.h, coarse.w, coarse.level)


def adapt(source: Shape, target: Shape) -> Adapt:
    """Pooling and projection that turn ``source`` into ``target`` (see module docstring)."""
    pool = 1 if source.same_size(target) else 2 ** (target.level - source.level)
    project = source.c if source.c != target.c else None
    return Adapt(pool, project)


class Tally:
    """Accumulates parameters, FLOPs and activation traffic, operation by operation."""

    def __init__(self) -> None:
        self.params = 0
        self.flops = 0
        self.elements = 0  # activation elements read + written
        self.written = 0  # activation elements written

    def move(self, reads: Iterable[Shape], write: Shape) -> None:
        self.elements += sum(s.elements for s in reads) + write.elements
        self.written += write.elements

    def conv(self, cin: int, cout: int, k: int, out: Shape, *, groups: int = 1) -> None:
        """A bias-free convolution producing ``out`` (traffic is counted by the unit)."""
        weights = cout * (cin // groups) * k * k
        self.params += weights
        self.flops += 2 * weights * out.h * out.w

    def bn(self, c: int) -> None:
        self.params += 2 * c

    def conv_unit(self, inp: Shape, out_channels: int, k: int, out: Shape, *,
                  separable: bool = False) -> None:
        """A fused conv(-pointwise)-BN-activation unit reading ``inp`` and writing ``out``.

        ``out`` may have more channels than ``out_channels`` (CReLU doubles them).
        """
        if separable:
            self.conv(inp.c, inp.c, k, out, groups=inp.c)
            self.conv(inp.c, out_channels, 1, out)
        else:
            self.conv(inp.c, out_channels, k, out)
        self.bn(out_channels)
        self.move([inp], out)

    def adapt(self, source: Shape, target: Shape) -> None:
        """Pool and/or project ``source`` to ``target`` (the join rule)."""
        how = adapt(source, target)
        if how.pool > 1:
            pooled = Shape(source.c, target.h, target.w, target.level)
            self.move([source], pooled)
            source = pooled
        if how.project_from is not None:
            self.conv(source.c, target.c, 1, target)
            self.bn(target.c)
            self.move([source], target)

    def head(self, last: Shape, num_classes: int) -> None:
        """Global average pool + linear classifier (with bias)."""
        pooled = Shape(last.c, 1, 1)
        self.move([last], pooled)
        self.params += last.c * num_classes + num_classes
        self.flops += 2 * last.c * num_classes
        self.move([pooled], Shape(num_classes, 1, 1))

    def result(self) -> Cost:
        return Cost(self.params, self.flops, FLOAT_BYTES * (self.params + self.elements),
                    self.written)


def check_input_shape(input_shape: Iterable[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
    return shape  # type: ignore[return-value]

