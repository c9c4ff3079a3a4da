"""The cellwise genome: its options (the tables and limits) and branches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from epnas.spaces import _units as U
from epnas.spaces.genome import Genome, SpaceOptions

PARTS = ("conv", "maxpool", "avgpool", "none")
BRANCH_TYPES = ("conv-conv", "conv-maxpool", "conv-avgpool", "conv-none", "maxpool-none",
                "avgpool-none", "none-none")


def parts(branch_type: str) -> tuple[str, str]:
    first, second = branch_type.split("-")
    return first, second


class CellwiseOptions(SpaceOptions):
    """Tables and limits of the cellwise space (the paper's Table 3 by default)."""

    branch_types: tuple[str, ...] = BRANCH_TYPES  # "partA-partB", parts from PARTS
    filter_widths: tuple[int, ...] = (1, 3, 5, 7)  # conv kernel widths, odd
    pool_widths: tuple[int, ...] = (2, 3)  # pool kernel widths (stride 1 inside a cell)
    channels: tuple[int, ...] = (8, 12, 16, 24, 32)  # branch output channels
    max_branches: int = Field(5, ge=1)  # MAX_BRANCHES: Src values lie in range(max_branches+1)
    min_branches: int = Field(1, ge=1)  # removes stop here
    groups: int = Field(2, ge=0)  # G: branch groups, one scale decision each
    cells_per_stage: int = Field(2, ge=1)  # N normal cells per stage
    stages: int = Field(3, ge=1)  # stages, separated by stride-2 reductions
    stem_channels: int = Field(16, ge=1)  # width of the first stage (doubles per stage)
    insert_prior: Literal["uniform", "deep"] = "uniform"  # check-table prior over places

    _tables = U.table_validator("filter_widths", "pool_widths", "channels")
    _odd = U.odd_validator("filter_widths")

    @field_validator("branch_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            pieces = name.split("-")
            if len(pieces) != 2 or not set(pieces) <= set(PARTS):
                raise ValueError(f"branch type {name!r} must be 'A-B' with A, B from {PARTS}")
        if not value or len(set(value)) != len(value):
            raise ValueError("branch_types must be distinct and non-empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CellwiseOptions:
        if self.min_branches > self.max_branches:
            raise ValueError("min_branches must not exceed max_branches")
        return self


@dataclass(frozen=True)
class Branch:
    """One branch; ``width``/``pool`` are None when the type has no conv/pool part."""

    uid: int
    type: str
    src1: int
    src2: int
    channels: int
    width: int | None = None
    pool: int | None = None
    propagate: int = 1


@dataclass(frozen=True, kw_only=True)
class CellwiseGenome(Genome):
    branches: tuple[Branch, ...]

    def structure(self) -> dict[str, Any]:
        return {"branches": [U.plain(b) for b in self.branches]}


def has_part(branch_type: str, kind: str) -> bool:
    """Whether a branch type has a conv part (kind 'conv') or a pool part ('pool')."""
    return any(p == kind or (kind == "pool" and p in ("maxpool", "avgpool"))
               for p in parts(branch_type))


def live_branches(genome: CellwiseGenome) -> set[int]:
    """Indices of the branches that reach the cell output."""
    outputs = [b for b, br in enumerate(genome.branches, start=1) if br.propagate]
    return U.live_units(genome.branches, outputs)
