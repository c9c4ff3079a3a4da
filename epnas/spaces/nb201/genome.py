"""The NAS-Bench-201 genome: the op table, the six edges and the arch string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from epnas.errors import GenomeError
from epnas.spaces.genome import Genome, SpaceOptions

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (source, target) in string order
STAGES = 3


class NB201Options(SpaceOptions):
    """The op table and the macro skeleton (NAS-Bench-201's C=16, N=5 by default)."""

    ops: tuple[str, ...] = NB201_OPS  # ops an edge may carry
    channels: int = Field(16, ge=1)  # C: first-stage width, doubled by each reduction
    cells_per_stage: int = Field(5, ge=1)  # N

    @field_validator("ops")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in NB201_OPS]
        if bad or not value or len(set(value)) != len(value):
            raise ValueError(f"ops must be distinct names from {list(NB201_OPS)}")
        if not set(value) - {"none"}:
            raise ValueError("ops needs at least one op besides 'none'")
        return value


@dataclass(frozen=True, kw_only=True)
class NB201Genome(Genome):
    ops: tuple[str, ...]  # one op per edge, in EDGES order

    @property
    def arch(self) -> str:
        """The NAS-Bench-201 arch string."""
        return to_arch(self.ops)

    def structure(self) -> dict[str, Any]:
        return {"arch": self.arch}


def to_arch(ops: tuple[str, ...]) -> str:
    groups = []
    for node in (1, 2, 3):
        tokens = [f"{op}~{src}" for op, (src, dst) in zip(ops, EDGES) if dst == node]
        groups.append("|" + "|".join(tokens) + "|")
    return "+".join(groups)


def parse_arch(arch: str) -> tuple[str, ...]:
    """The six edge ops of an arch string, in EDGES order."""
    if not isinstance(arch, str):
        raise GenomeError(f"arch = {arch!r} must be a string")
    groups = arch.split("+")
    if len(groups) != 3:
        raise GenomeError(f"arch = {arch!r} must have 3 '+'-separated node groups")
    ops = []
    for node, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise GenomeError(f"arch node {node} group {group!r} must look like |op~0|...|")
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise GenomeError(f"arch node {node} must have {node} incoming edges, "
                              f"got {len(tokens)}")
        for src, token in enumerate(tokens):
            op, sep, ref = token.partition("~")
            if not sep or ref != str(src):
                raise GenomeError(f"arch edge {token!r} into node {node} must be 'op~{src}'")
            ops.append(op)
    return tuple(ops)
