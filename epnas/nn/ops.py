"""The torch operations every space builds from.

All convolutions are bias-free and followed by batch norm; the cost model in
:mod:`epnas.costmodel` counts exactly these modules.
"""

from __future__ import annotations

import torch
from torch import nn

from epnas.costmodel import Shape, adapt


class CReLU(nn.Module):
    """Concatenated ReLU: ``cat(relu(x), relu(-x))`` along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=1)


def activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "crelu": CReLU,
        "elu": lambda: nn.ELU(inplace=True),
        "selu": lambda: nn.SELU(inplace=True),
        "swish": lambda: nn.SiLU(inplace=True),
    }[name]()


def conv_unit(cin: int, cout: int, k: int, act: str | None = "relu", *,
              separable: bool = False, stride: int = 1) -> nn.Sequential:
    """conv (or depthwise + pointwise) -> batch norm -> activation."""
    pad = k // 2
    if separable:
        convs = [
            nn.Conv2d(cin, cin, k, stride, pad, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        ]
    else:
        convs = [nn.Conv2d(cin, cout, k, stride, pad, bias=False)]
    return nn.Sequential(*convs, nn.BatchNorm2d(cout), activation(act))


def pool2d(kind: str, k: int, stride: int, padding: int, ceil_mode: bool) -> nn.Module:
    if kind == "maxpool":
        return nn.MaxPool2d(k, stride, padding, ceil_mode=ceil_mode)
    # excluding padding keeps a pool on a 1x1 map an identity
    return nn.AvgPool2d(k, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)


def down_pool(kind: str, k: int) -> nn.Module:
    """A stride-2 pool mapping H to ceil(H/2) for any kernel width."""
    return pool2d(kind, k, 2, (k - 1) // 2, ceil_mode=k % 2 == 0)


class SamePool(nn.Module):
    """A stride-1 pool that keeps H x W (even kernels pad one more and crop)."""

    def __init__(self, kind: str, k: int) -> None:
        super().__init__()
        self.pool = pool2d(kind, k, 1, k // 2, ceil_mode=False)
        self.crop = k % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        return y[:, :, : x.shape[2], : x.shape[3]] if self.crop else y


def adapter(source: Shape, target: Shape) -> nn.Module:
    """The join rule's pooling and projection from ``source`` to ``target`` (see
    :mod:`epnas.costmodel`); an identity when the shapes agree."""
    how = adapt(source, target)
    parts: list[nn.Module] = []
    if how.pool > 1:
        parts.append(pool2d("avgpool", how.pool, how.pool, 0, ceil_mode=True))
    if how.project_from is not None:
        parts.append(conv_unit(how.project_from, target.c, 1, act=None))
    if not parts:
        return nn.Identity()
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


class Head(nn.Module):
    """Global average pool + linear classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
