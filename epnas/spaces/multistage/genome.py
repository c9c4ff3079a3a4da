"""The multistage genome: its options (stage layout and choice tables), blocks and stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from epnas.spaces import _units as U
from epnas.spaces.genome import Genome, SpaceOptions


class MultistageOptions(SpaceOptions):
    """The stage layout and choice tables (reduced widths for small CPUs by default).

    Stage ``s`` has output channels ``widths[s]`` and its first block has stride
    ``strides[s]``; a stride on a 1x1 map is an identity (``ceil(H / 2)``).
    """

    stages: int = Field(4, ge=1)  # S: stages, each followed by an exit
    widths: tuple[int, ...] = (16, 24, 40, 64)  # output channels per stage
    strides: tuple[int, ...] = (1, 2, 2, 2)  # stride of each stage's first block (1 or 2)
    stem_channels: int = Field(16, ge=1)  # 3x3 stride-1 stem
    depths: tuple[int, ...] = (1, 2, 3)  # allowed blocks per stage, consecutive
    kernels: tuple[int, ...] = (3, 5, 7)  # depthwise kernel sizes, odd
    expands: tuple[int, ...] = (2, 4, 6)  # expansion ratios: hidden = in_channels * expand
    resolutions: tuple[int, ...] = (20, 24, 28, 32)  # input sides the network resizes to
    exit_conv: bool = False  # a 1x1 conv-BN-ReLU (stage width) before each exit's pool

    _tables = U.table_validator("depths", "kernels", "expands", "resolutions")
    _odd = U.odd_validator("kernels")

    @field_validator("widths")
    @classmethod
    def _widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 1:
            raise ValueError("widths must be positive channel counts")
        return value

    @field_validator("strides")
    @classmethod
    def _strides(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(s not in (1, 2) for s in value):
            raise ValueError(f"strides must be 1 or 2, got {list(value)}")
        return value

    @field_validator("depths")
    @classmethod
    def _consecutive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if list(value) != list(range(value[0], value[-1] + 1)):
            raise ValueError(f"depths must be consecutive (a block is inserted or removed "
                             f"one at a time), got {list(value)}")
        return value

    @model_validator(mode="after")
    def _per_stage(self) -> MultistageOptions:
        for name in ("widths", "strides"):
            if len(getattr(self, name)) != self.stages:
                raise ValueError(f"{name} needs one entry per stage ({self.stages}), "
                                 f"got {len(getattr(self, name))}")
        return self


@dataclass(frozen=True)
class Block:
    """One inverted-residual block: depthwise kernel size and expansion ratio."""

    kernel: int
    expand: int


@dataclass(frozen=True, kw_only=True)
class MultistageGenome(Genome):
    """Input resolution and the blocks of every stage (a stage's depth is its length)."""

    resolution: int
    stages: tuple[tuple[Block, ...], ...]

    def structure(self) -> dict[str, Any]:
        return {"resolution": self.resolution,
                "stages": [[U.plain(block) for block in stage] for stage in self.stages]}
