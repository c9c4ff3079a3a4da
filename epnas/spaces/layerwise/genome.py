"""The layerwise genome: its options (the tables and limits), layers and shape plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from epnas.costmodel import Shape
from epnas.nn import ACTIVATIONS
from epnas.spaces import _units as U
from epnas.spaces.genome import Genome, SpaceOptions

CONV_OPS = ("conv", "sepconv")
POOL_OPS = ("maxpool", "avgpool")
LAYER_OPS = (*CONV_OPS, *POOL_OPS, "add")


class LayerwiseOptions(SpaceOptions):
    """Tables and limits of the layerwise space (the paper's Table 3 by default)."""

    ops: tuple[str, ...] = LAYER_OPS  # layer types a genome may hold
    insert_ops: tuple[str, ...] | None = None  # layer types an insert may add (None: ops)
    filter_widths: tuple[int, ...] = (1, 3, 5, 7)  # conv kernel widths, odd
    pool_widths: tuple[int, ...] = (2, 3)  # pool kernel widths (pools have stride 2)
    channels: tuple[int, ...] = (16, 32, 64, 96, 128, 256)  # conv filter counts
    activations: tuple[str, ...] = ACTIVATIONS
    max_layers: int = Field(16, ge=1)  # MAX_LAYERS: Src values lie in range(max_layers)
    min_layers: int = Field(1, ge=1)  # removes stop here
    groups: int = Field(4, ge=0)  # G: layer groups, one scale decision each
    stem_channels: int = Field(16, ge=1)
    insert_prior: Literal["uniform", "deep"] = "uniform"  # check-table prior over places

    _tables = U.table_validator("filter_widths", "pool_widths", "channels")
    _odd = U.odd_validator("filter_widths")

    @field_validator("ops", "insert_ops", "activations")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None, info: Any) -> tuple[str, ...] | None:
        known = ACTIVATIONS if info.field_name == "activations" else LAYER_OPS
        if value is not None:
            bad = [v for v in value if v not in known]
            if bad or not value or len(set(value)) != len(value):
                raise ValueError(f"must be distinct names from {list(known)}, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LayerwiseOptions:
        if self.min_layers > self.max_layers:
            raise ValueError("min_layers must not exceed max_layers")
        if self.insert_ops is not None and not set(self.insert_ops) <= set(self.ops):
            raise ValueError("insert_ops must be a subset of ops")
        return self

    @property
    def insertable(self) -> tuple[str, ...]:
        return self.insert_ops if self.insert_ops is not None else self.ops


@dataclass(frozen=True)
class Layer:
    """One layer. ``width`` is the kernel width of convs and pools; unused fields are None."""

    uid: int
    op: str
    src1: int
    src2: int = -1
    width: int | None = None
    channels: int | None = None
    act: str | None = None


@dataclass(frozen=True, kw_only=True)
class LayerwiseGenome(Genome):
    layers: tuple[Layer, ...]

    def structure(self) -> dict[str, Any]:
        return {"layers": [U.plain(layer) for layer in self.layers]}


@dataclass(frozen=True)
class LayerPlan:
    """Shapes around one layer: its input, the op's output, the skip, the layer output."""

    index: int
    layer: Layer
    inp: Shape
    main: Shape
    skip: Shape | None
    out: Shape
