"""A space written from scratch: plain CNNs made of a chain of stages.

A stage is a k x k convolution with c filters, batch norm and ReLU, optionally followed
by a 2 x 2 max-pool that halves the resolution. The network is the stages in order,
then global average pooling and a linear classifier. Use it by its spec,
``docs.examples.macro_space:MacroSpace`` (or register it, or publish it by entry point).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from epnas.costmodel import Cost, Shape, Tally
from epnas.errors import ActionError, GenomeError
from epnas.spaces import (
    SCALE_CHOICES,
    ActionSpace,
    Decision,
    Genome,
    Insert,
    Keep,
    Remove,
    Scale,
    Space,
    SpaceOptions,
)
from epnas.spaces.graph import Edge, Graph, Node

KINDS = ("insert", "remove", "keep")
OPS = ("conv", "conv-pool")  # what an insert adds: a stage without or with its pool


class MacroOptions(SpaceOptions):
    """The tables and limits; they are part of every genome's JSON."""

    kernels: tuple[int, ...] = (1, 3, 5)  # odd, so a stage keeps H x W; ascending
    channels: tuple[int, ...] = (8, 16, 32, 64)  # ascending: scale steps walk the table
    min_stages: int = Field(1, ge=1)
    max_stages: int = Field(6, ge=1)
    groups: int = Field(2, ge=0)  # stage groups, one scale decision each


@dataclass(frozen=True)
class Stage:
    """One stage; ``uid`` stays with it when others are inserted or removed."""

    uid: int
    kernel: int
    channels: int
    pool: int  # 1: a 2 x 2 max-pool after the convolution, 0: none


@dataclass(frozen=True, kw_only=True)
class MacroGenome(Genome):
    stages: tuple[Stage, ...]

    def structure(self) -> dict[str, Any]:
        return {"stages": [asdict(s) for s in self.stages]}


class MacroNet(nn.Module):
    def __init__(self, stages: list[nn.Module], head: nn.Linear) -> None:
        super().__init__()
        self.stages, self.head = nn.ModuleList(stages), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean((2, 3)))


class MacroSpace(Space):
    """Chains of conv(-pool) stages, searched stage by stage."""

    Options = MacroOptions
    options: MacroOptions
    steps_per_episode = 3  # EPNAS: a few transformations already make another network

    # --- genomes ---------------------------------------------------------------------

    def genome(self, stages: list[Stage]) -> MacroGenome:
        genome = MacroGenome(space=self.name, options=self.options, stages=tuple(stages))
        self.validate(genome)
        return genome

    def validate(self, genome: Genome) -> None:
        self.check_member(genome)  # names this space and its options
        if not isinstance(genome, MacroGenome):
            raise GenomeError("genome is not a MacroGenome")
        o = self.options
        if not o.min_stages <= len(genome.stages) <= o.max_stages:
            raise GenomeError(f"stages: {len(genome.stages)} stages, must be "
                              f"{o.min_stages}..{o.max_stages}")
        if len({s.uid for s in genome.stages}) != len(genome.stages):
            raise GenomeError("stages: uids must be unique")
        for i, s in enumerate(genome.stages, start=1):
            for name, table in (("kernel", o.kernels), ("channels", o.channels),
                                ("pool", (0, 1))):
                value = getattr(s, name)
                if type(value) is not int or value not in table:  # JSON's 3.0 is no 3
                    raise GenomeError(f"stages[{i}].{name} = {value!r} is not one of "
                                      f"{list(table)}")
            if type(s.uid) is not int or s.uid < 1:
                raise GenomeError(f"stages[{i}].uid = {s.uid!r} must be a positive integer")

    def from_structure(self, data: Mapping[str, Any]) -> MacroGenome:
        if set(data) != {"stages"} or not isinstance(data["stages"], list):
            raise GenomeError("a macro genome is {'stages': [stage objects]}")
        try:
            return self.genome([Stage(**s) for s in data["stages"]])
        except TypeError as exc:  # a missing or unknown stage field
            raise GenomeError(f"stages: {exc}") from None

    def size(self, genome: Genome) -> int:
        return len(genome.stages)  # type: ignore[attr-defined]

    def describe(self, genome: Genome) -> str:
        return " ".join(f"{s.kernel}x{s.kernel}:{s.channels}" + ("/2" if s.pool else "")
                        for s in genome.stages)  # type: ignore[attr-defined]

    # --- sampling and mutation ---------------------------------------------------------

    def _random_stage(self, rng: np.random.Generator, uid: int) -> Stage:
        o = self.options
        return Stage(uid, int(rng.choice(o.kernels)), int(rng.choice(o.channels)),
                     int(rng.integers(2)))

    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> MacroGenome:
        o = self.options
        n = depth if depth is not None else int(rng.integers(o.min_stages, o.max_stages + 1))
        if not o.min_stages <= n <= o.max_stages:
            raise GenomeError(f"depth = {n} must be in {o.min_stages}..{o.max_stages}")
        return self.genome([self._random_stage(rng, uid) for uid in range(1, n + 1)])

    def mutate(self, genome: Genome, rng: np.random.Generator) -> MacroGenome:
        self.validate(genome)
        stages = list(genome.stages)  # type: ignore[attr-defined]
        while True:  # redraw one stage's fields until something changed
            i = int(rng.integers(len(stages)))
            fresh = self._random_stage(rng, stages[i].uid)
            if fresh != stages[i]:
                stages[i] = fresh
                return self.genome(stages)

    # --- progressive actions -------------------------------------------------------------

    def _group(self, index: int, count: int) -> int:
        return index * self.options.groups // count  # contiguous blocks of stages

    def _scaled(self, stage: Stage, what: str, step: int) -> Stage | None:
        """``stage`` one table step up or down, None at the table's edge."""
        field = {"channels": "channels", "width": "kernel"}[what]
        table = self.options.channels if what == "channels" else self.options.kernels
        at = table.index(getattr(stage, field)) + step
        return replace(stage, **{field: table[at]}) if 0 <= at < len(table) else None

    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        return {"kind": KINDS, "op": OPS, "place": tuple(range(o.max_stages)),
                "width": o.kernels, "channels": o.channels,
                "target": tuple(range(1, o.max_stages + 1))}

    def actions(self, genome: Genome) -> ActionSpace:
        self.validate(genome)
        stages, o = genome.stages, self.options  # type: ignore[attr-defined]
        n, vocab = len(stages), self.decision_vocabulary()

        def moves(group: int, choice: str) -> bool:
            if choice == "keep":
                return True
            what, step = choice[:-1], 1 if choice[-1] == "+" else -1
            return any(self._scaled(s, what, step) for i, s in enumerate(stages)
                       if self._group(i, n) == group)

        scale = tuple(Decision("scale", SCALE_CHOICES,
                               tuple(moves(g, c) for c in SCALE_CHOICES))
                      for g in range(o.groups))

        def decision(name: str, legal: Any) -> Decision:
            return Decision(name, vocab[name], tuple(bool(legal(c)) for c in vocab[name]))

        def next_decision(chosen: Mapping[str, Any]) -> Decision | None:
            if "kind" not in chosen:
                can = {"insert": n < o.max_stages, "remove": n > o.min_stages, "keep": True}
                return decision("kind", can.__getitem__)
            if chosen["kind"] == "remove" and "target" not in chosen:
                return decision("target", lambda t: t <= n)
            if chosen["kind"] != "insert":
                return None
            for name in ("op", "place", "width", "channels"):
                if name not in chosen:
                    return decision(name, lambda c, name=name: name != "place" or c <= n)
            return None

        def make_action(chosen: Mapping[str, Any]) -> Insert | Remove | Keep:
            if chosen["kind"] == "keep":
                return Keep()
            if chosen["kind"] == "remove":
                return Remove(chosen["target"])
            return Insert(chosen["op"], chosen["place"], width=chosen["width"],
                          channels=chosen["channels"])

        return ActionSpace(scale, next_decision, make_action)

    def apply(self, genome: Genome, action: Any) -> MacroGenome:
        self.validate(genome)
        stages = list(genome.stages)  # type: ignore[attr-defined]
        try:
            if isinstance(action, Keep):
                return genome  # type: ignore[return-value]
            if isinstance(action, Scale) and action.step in (-1, 1):
                moved = [self._scaled(s, action.what, action.step)
                         if self._group(i, len(stages)) == action.group else None
                         for i, s in enumerate(stages)]
                if not any(moved):
                    raise ActionError(f"illegal action: {action} moves no stage")
                return self.genome([m or s for m, s in zip(moved, stages)])
            if isinstance(action, Remove):
                if not 1 <= action.target <= len(stages):
                    raise ActionError(f"illegal action: no stage {action.target}")
                del stages[action.target - 1]
                return self.genome(stages)
            if isinstance(action, Insert) and action.op in OPS \
                    and 0 <= action.place <= len(stages):
                uid = max(s.uid for s in stages) + 1
                new = Stage(uid, action.width, action.channels, OPS.index(action.op))
                return self.genome([*stages[:action.place], new, *stages[action.place:]])
        except (GenomeError, KeyError, ValueError) as exc:
            if isinstance(exc, ActionError):
                raise
            raise ActionError(f"illegal action: {action}: {exc}") from None
        raise ActionError(f"illegal action: {action!r} is not a macro action")

    # --- tokens (for policies and surrogates) --------------------------------------------

    @property
    def token_fields(self) -> tuple[str, ...]:
        return ("kernel", "channels", "pool")

    def _tables(self) -> tuple[tuple[int, ...], ...]:
        return self.options.kernels, self.options.channels, (0, 1)

    @property
    def vocab_size(self) -> int:
        return sum(len(t) for t in self._tables())

    def encode(self, genome: Genome) -> list[int]:
        tokens = []
        for s in genome.stages:  # type: ignore[attr-defined]
            offset = 0
            for table, value in zip(self._tables(), (s.kernel, s.channels, s.pool)):
                tokens.append(offset + table.index(value))
                offset += len(table)
        return tokens

    def decode(self, tokens: list[int]) -> MacroGenome:
        if len(tokens) % 3:
            raise GenomeError("tokens: three per stage")
        stages = []
        for uid, start in enumerate(range(0, len(tokens), 3), start=1):
            values, offset = [], 0
            for table, token in zip(self._tables(), tokens[start:start + 3]):
                if not 0 <= token - offset < len(table):
                    raise GenomeError(f"tokens: {token} is out of range")
                values.append(table[token - offset])
                offset += len(table)
            stages.append(Stage(uid, *values))
        return self.genome(stages)

    # --- costs, network, sharing keys, drawing ----------------------------------------

    def _shapes(self, genome: Genome, input_shape: tuple[int, int, int]) -> list[Shape]:
        """The input shape, then every stage's output. A pool maps H to ceil(H / 2), so
        a 1 x 1 map stays 1 x 1: validity does not depend on the input size."""
        shapes = [Shape(*input_shape)]
        for s in genome.stages:  # type: ignore[attr-defined]
            out = shapes[-1].with_channels(s.channels)
            shapes.append(out.halved() if s.pool else out)
        return shapes

    def cost(self, genome: Genome, input_shape: tuple[int, int, int],
             num_classes: int) -> Cost:
        tally, shapes = Tally(), self._shapes(genome, input_shape)
        for s, inp, out in zip(genome.stages, shapes, shapes[1:]):  # type: ignore[attr-defined]
            conv = inp.with_channels(s.channels)  # conv-BN-ReLU keeps H x W
            tally.conv_unit(inp, s.channels, s.kernel, conv)
            if s.pool:
                tally.move([conv], out)  # the pool reads and writes; it has no FLOPs
        tally.head(shapes[-1], num_classes)
        return tally.result()

    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> MacroNet:
        shapes = self._shapes(genome, input_shape)
        stages = []
        for s, inp in zip(genome.stages, shapes):  # type: ignore[attr-defined]
            layers = [nn.Conv2d(inp.c, s.channels, s.kernel, padding=s.kernel // 2, bias=False),
                      nn.BatchNorm2d(s.channels), nn.ReLU(inplace=True)]
            if s.pool:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        return MacroNet(stages, nn.Linear(shapes[-1].c, num_classes))

    def sharing_keys(self, genome: Genome, model: nn.Module) -> dict[str, dict[str, nn.Module]]:
        """A stage keeps its weights across candidates under its uid and kernel size."""
        keys = {f"stage/{s.uid}/k{s.kernel}": {"": module}
                for s, module in zip(genome.stages, model.stages)}  # type: ignore[attr-defined]
        return {**keys, "head": {"": model.head}}

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph:
        stages = genome.stages  # type: ignore[attr-defined]
        nodes = [Node("input", "", "io")]
        nodes += [Node(f"conv {s.kernel}×{s.kernel}, {s.channels}" + (" + pool" if s.pool
                                                                     else ""))
                  for s in stages]
        nodes.append(Node("head", "global avg pool → linear", "io"))
        return Graph(f"macro, {len(stages)} stages", tuple(nodes),
                     tuple(Edge(i, i + 1) for i in range(len(nodes) - 1)))
