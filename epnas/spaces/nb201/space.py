"""The ``nb201`` space: the NAS-Bench-201 cell and its standard macro skeleton.

A cell is a DAG of 4 nodes; node ``j`` sums one edge from every earlier node, so six
edges in the order (0->1), (0->2), (1->2), (0->3), (1->3), (2->3), each carrying one
op. Its arch string is ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

Network (NAS-Bench-201): stem (3x3 conv + BN, ``channels``) -> 3 stages of
``cells_per_stage`` cells with a residual reduction block between stages (doubles the
channels, stride 2) -> BN-ReLU -> global average pool -> linear. The reduction's
shortcut average pool uses ceil mode so odd input sizes work too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from epnas.costmodel import Cost, Shape, Tally
from epnas.errors import GenomeError
from epnas.spaces import _units as U
from epnas.spaces.base import Space, scaled_count
from epnas.spaces.genome import (
    Action,
    ActionSpace,
    Genome,
    Insert,
    Keep,
    Remove,
    Scale,
    make_decision,
)
from epnas.spaces.graph import Graph
from epnas.spaces.nb201 import drawing
from epnas.spaces.nb201.genome import EDGES, STAGES, NB201Genome, NB201Options, parse_arch

if TYPE_CHECKING:
    from torch import nn


class NB201Space(Space):
    """The NAS-Bench-201 cell: six edges with five ops (15,625 cells)."""

    Options = NB201Options
    options: NB201Options

    def genome(self, ops: tuple[str, ...] | list[str]) -> NB201Genome:
        genome = NB201Genome(space=self.name, options=self.options, ops=tuple(ops))
        self.validate(genome)
        return genome

    def from_arch(self, arch: str) -> NB201Genome:
        """The genome of a NAS-Bench-201 arch string."""
        return self.genome(parse_arch(arch))

    def from_structure(self, data: Mapping[str, Any]) -> NB201Genome:
        unknown = set(data) - {"arch"}
        if unknown:
            raise GenomeError(f"unknown key(s) {sorted(unknown)} in an nb201 genome")
        if "arch" not in data:
            raise GenomeError("arch: an nb201 genome needs its arch string")
        return self.from_arch(data["arch"])

    def validate(self, genome: Genome) -> None:
        self.check_member(genome)
        if not isinstance(genome, NB201Genome):
            raise GenomeError("genome is not an NB201Genome")
        if len(genome.ops) != len(EDGES):
            raise GenomeError(f"ops: a cell has {len(EDGES)} edges, got {len(genome.ops)}")
        for e, op in enumerate(genome.ops):
            src, dst = EDGES[e]
            U.check_choice(f"ops[{e}] (edge {src}->{dst})", op, self.options.ops)

    def size(self, genome: Genome) -> int:
        return sum(op != "none" for op in genome.ops)  # type: ignore[attr-defined]

    def scale_channels(self, genome: Genome, factor: float) -> NB201Genome:
        """The same cell with C scaled (see :class:`Space`)."""
        self.validate(genome)
        o = self.options
        space = type(self)(**{**dict(o), "channels": scaled_count(o.channels, factor)})
        space.name = self.name
        return space.genome(list(genome.ops))  # type: ignore[attr-defined]

    def describe(self, genome: Genome) -> str:
        return genome.arch  # type: ignore[attr-defined]

    @property
    def _active_ops(self) -> tuple[str, ...]:
        return tuple(op for op in self.options.ops if op != "none")

    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> NB201Genome:
        if depth is None:
            return self.genome([U.pick(rng, self.options.ops) for _ in EDGES])
        if not 0 <= depth <= len(EDGES) or (depth < len(EDGES) and "none" not in self.options.ops):
            raise GenomeError(f"depth = {depth} active edges is not possible with these ops")
        active = set(rng.choice(len(EDGES), size=depth, replace=False).tolist())
        return self.genome([U.pick(rng, self._active_ops) if e in active else "none"
                            for e in range(len(EDGES))])

    def mutate(self, genome: Genome, rng: np.random.Generator) -> NB201Genome:
        self.validate(genome)

        def mutation(g: NB201Genome, rng: np.random.Generator) -> NB201Genome:
            ops = list(g.ops)
            ops[int(rng.integers(len(ops)))] = U.pick(rng, self.options.ops)
            return self.genome(ops)

        return U.mutate_until_changed(genome, rng, mutation)

    # --- progressive actions: an insert sets an edge's op, a remove sets it to none --

    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        edges = tuple(range(len(EDGES)))
        return {"kind": U.KINDS, "target": edges, "place": edges, "op": self.options.ops}

    def actions(self, genome: Genome) -> ActionSpace:
        self.validate(genome)
        ops: tuple[str, ...] = genome.ops  # type: ignore[attr-defined]
        edges = tuple(range(len(EDGES)))
        settable = [e for e in edges if set(self._active_ops) - {ops[e]}]
        clearable = [e for e in edges if ops[e] != "none"] if "none" in self.options.ops else []

        def next_decision(chosen: Mapping[str, Any]) -> Any:
            kind = chosen.get("kind")
            if kind is None:
                return U.kind_decision(bool(settable), bool(clearable))
            if kind == "keep":
                return None
            if kind == "remove":
                if "target" in chosen:
                    return None
                return make_decision("target", edges, lambda e: e in clearable)
            if "place" not in chosen:
                return make_decision("place", edges, lambda e: e in settable)
            if "op" not in chosen:
                edge = chosen["place"]
                return make_decision("op", self.options.ops,
                                     lambda op: op != "none" and op != ops[edge])
            return None

        return ActionSpace((), next_decision, U.action_from)

    def apply(self, genome: Genome, action: Action) -> NB201Genome:
        self.validate(genome)
        ops = list(genome.ops)  # type: ignore[attr-defined]
        if isinstance(action, Keep):
            return genome  # type: ignore[return-value]
        if isinstance(action, Scale):
            raise U.illegal("nb201 has no scale decisions (G = 0)")
        if isinstance(action, Remove | Insert):
            edge = action.target if isinstance(action, Remove) else action.place
            if not 0 <= edge < len(EDGES):
                raise U.illegal(f"edge = {edge} must be in 0..{len(EDGES) - 1}")
            op = "none" if isinstance(action, Remove) else action.op
            if op == ops[edge]:
                raise U.illegal(f"edge {edge} already carries {op!r}")
            if isinstance(action, Insert) and op == "none":
                raise U.illegal("insert must set an op other than 'none' (use remove)")
            if op not in self.options.ops:
                raise U.illegal(f"op = {op!r} is not one of {list(self.options.ops)}")
            ops[edge] = op
            return self.genome(ops)
        raise U.illegal(f"{action!r} is not an nb201 action")

    # --- tokens --------------------------------------------------------------------

    @property
    def token_fields(self) -> tuple[str, ...]:
        return ("op",)

    @property
    def vocab_size(self) -> int:
        return len(self.options.ops)

    def encode(self, genome: Genome) -> list[int]:
        return [self.options.ops.index(op) for op in genome.ops]  # type: ignore[attr-defined]

    def next_tokens(self, prefix: Sequence[int]) -> range:
        """Every op on each edge: any sequence of ``len(EDGES)`` ops is a cell."""
        return range(self.vocab_size if len(prefix) < len(EDGES) else 0)

    def decode(self, tokens: list[int]) -> NB201Genome:
        if len(tokens) != len(EDGES):
            raise GenomeError(f"tokens: an nb201 cell has {len(EDGES)} tokens, got {len(tokens)}")
        if any(not 0 <= t < self.vocab_size for t in tokens):
            raise GenomeError(f"tokens: ids must be in 0..{self.vocab_size - 1}, got {tokens}")
        return self.genome([self.options.ops[t] for t in tokens])

    # --- shapes, costs, network ------------------------------------------------------

    def stage_shapes(self, input_shape: tuple[int, int, int]) -> list[Shape]:
        shape = Shape(self.options.channels, input_shape[1], input_shape[2])
        shapes = [shape]
        for _ in range(1, STAGES):
            shape = shape.halved().with_channels(shape.c * 2)
            shapes.append(shape)
        return shapes

    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        ops: tuple[str, ...] = genome.ops  # type: ignore[attr-defined]
        tally = Tally()
        stages = self.stage_shapes(input_shape)
        tally.conv_unit(Shape(*input_shape), stages[0].c, 3, stages[0])
        for s, x in enumerate(stages):
            if s:
                prev = stages[s - 1]
                tally.conv_unit(prev, x.c, 3, x)  # conv_a, stride 2
                tally.conv_unit(x, x.c, 3, x)  # conv_b
                pooled = x.with_channels(prev.c)
                tally.move([prev], pooled)  # shortcut: average pool ...
                tally.conv(prev.c, x.c, 1, x)  # ... then a 1x1 conv without BN
                tally.move([pooled], x)
                tally.move([x, x], x)
            for _ in range(self.options.cells_per_stage):
                self._cell_cost(tally, ops, x)
        tally.bn(stages[-1].c)  # last BN-ReLU
        tally.move([stages[-1]], stages[-1])
        tally.head(stages[-1], num_classes)
        return tally.result()

    @staticmethod
    def _cell_cost(tally: Tally, ops: tuple[str, ...], x: Shape) -> None:
        for node in (1, 2, 3):
            incoming = [op for op, (_, dst) in zip(ops, EDGES) if dst == node and op != "none"]
            for op in incoming:
                if op.startswith("nor_conv_"):
                    tally.conv_unit(x, x.c, int(op[-1]), x)
                elif op == "avg_pool_3x3":
                    tally.move([x], x)
            if len(incoming) != 1:  # a sum, or the zeros of a node with no input
                tally.move([x] * len(incoming), x)

    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> nn.Module:
        from epnas.spaces.nb201 import network  # torch, only when a network is built

        return network.build(genome.ops, input_shape[0], self.stage_shapes(input_shape),  # type: ignore[attr-defined]
                             self.options.cells_per_stage, num_classes)

    def sharing_keys(self, genome: Genome,
                     model: nn.Module) -> dict[str, dict[str, nn.Module]]:
        """``cell<k>/edge<e>/<op>`` (``e`` indexes ``EDGES``), ``stem``, ``reduction<s>``
        and ``head`` (the final BN and the classifier)."""
        from epnas.spaces.nb201 import network

        return network.sharing_keys(genome.ops, model)  # type: ignore[attr-defined, arg-type]

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph:
        stages = self.stage_shapes(input_shape) if input_shape is not None else []
        return drawing.graph(genome.ops, stages, self.options.cells_per_stage)  # type: ignore[attr-defined]
