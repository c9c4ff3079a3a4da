"""Torch building blocks and the genome -> ``nn.Module`` builder."""

from epnas.nn.build import build

__all__ = ["build"]
