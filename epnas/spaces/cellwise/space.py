"""The ``cellwise`` space (module search): one cell of branches, stacked PNAS-style.

Branch ``b`` computes ``partA(h[src1]) + partB(h[src2])`` where its type names the two
parts (``conv-maxpool``: a conv on Src1 plus a max-pool on Src2; ``none`` passes its
input through). ``h[0]`` is the cell input and ``h[k]`` the output of branch ``k``.
Every branch outputs ``channels`` channels and keeps H x W: a pool or identity part
whose input has other channels is projected by a 1x1 conv + BN. The cell output
concatenates the branches with ``propagate = 1`` and is projected back to the stage
width when the widths differ. Branches that reach no propagated branch are not built
and cost nothing.

Network: stem (3x3 conv-BN-ReLU, ``stem_channels``) -> ``stages`` stages of
``cells_per_stage`` cells, with a stride-2 3x3 conv-BN-ReLU between stages that doubles
the channels -> global average pool -> linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from epnas.costmodel import Cost, Shape, Tally
from epnas.errors import GenomeError
from epnas.spaces import _units as U
from epnas.spaces.cellwise import drawing
from epnas.spaces.cellwise.genome import (
    Branch,
    CellwiseGenome,
    CellwiseOptions,
    has_part,
    live_branches,
    parts,
)
from epnas.spaces.genome import ActionSpace, Decision, Genome, Insert, make_decision
from epnas.spaces.graph import Graph
from epnas.spaces.units import UnitSpace

if TYPE_CHECKING:
    from torch import nn


class CellwiseSpace(UnitSpace):
    """Module search: a cell of up to MAX_BRANCHES two-input branches, stacked in stages."""

    Options = CellwiseOptions
    options: CellwiseOptions
    limit_options = ("min_branches", "max_branches")
    unit_field, unit_class, unit_word = "branches", Branch, "branch"
    genome_class = CellwiseGenome

    # --- genomes -----------------------------------------------------------------

    def validate(self, genome: Genome) -> None:
        o = self.options
        for b, branch in enumerate(self._checked_units(genome), start=1):
            f = f"branches[{b}]"
            U.check_choice(f"{f}.type", branch.type, o.branch_types)
            U.check_ref(f"{f}.src1", branch.src1, 0, b - 1)
            U.check_ref(f"{f}.src2", branch.src2, 0, b - 1)
            U.check_choice(f"{f}.channels", branch.channels, o.channels)
            if has_part(branch.type, "conv"):
                U.check_choice(f"{f}.width", branch.width, o.filter_widths)
            else:
                U.check_unused(f"{f}.width", branch.width, f"{branch.type} has no conv")
            if has_part(branch.type, "pool"):
                U.check_choice(f"{f}.pool", branch.pool, o.pool_widths)
            else:
                U.check_unused(f"{f}.pool", branch.pool, f"{branch.type} has no pool")
            U.check_choice(f"{f}.propagate", branch.propagate, (0, 1))
        if not any(b.propagate for b in genome.branches):
            raise GenomeError("branches: at least one branch must propagate to the cell output")

    def describe(self, genome: Genome) -> str:
        """E.g. ``conv-maxpool(k3,p2,16)[0,1]*``: type, kernel, pool, channels, [Src1,Src2],
        ``*`` when the branch propagates to the cell output."""
        parts = []
        for b in genome.branches:  # type: ignore[attr-defined]
            params = [f"k{b.width}"] if b.width else []
            params += [f"p{b.pool}"] if b.pool else []
            params.append(str(b.channels))
            star = "*" if b.propagate else ""
            parts.append(f"{b.type}({','.join(params)})[{b.src1},{b.src2}]{star}")
        return " ".join(parts)

    # --- sampling ----------------------------------------------------------------

    def _random_params(self, rng: np.random.Generator, branch_type: str) -> dict[str, Any]:
        o = self.options
        return {
            "channels": U.pick(rng, o.channels),
            "width": U.pick(rng, o.filter_widths) if has_part(branch_type, "conv") else None,
            "pool": U.pick(rng, o.pool_widths) if has_part(branch_type, "pool") else None,
        }

    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> CellwiseGenome:
        o = self.options
        if depth is None:
            depth = int(rng.integers(o.min_branches, o.max_branches + 1))
        if not o.min_branches <= depth <= o.max_branches:
            raise GenomeError(f"depth = {depth} must be in {o.min_branches}..{o.max_branches}")
        branches = []
        for b in range(1, depth + 1):
            branch_type = U.pick(rng, o.branch_types)
            branches.append(Branch(b, branch_type, int(rng.integers(b)), int(rng.integers(b)),
                                   **self._random_params(rng, branch_type)))
        used = {s for br in branches for s in (br.src1, br.src2)}
        # branches nothing reads must propagate, or they would be dead weight
        branches = [replace(br, propagate=1 if b not in used else int(rng.integers(2)))
                    for b, br in enumerate(branches, start=1)]
        return self.genome(branches)

    def _mutation(self, genome: CellwiseGenome, rng: np.random.Generator) -> CellwiseGenome:
        kind = U.pick(rng, ("type", "param", "src", "grow"))
        if kind == "grow":
            return self.apply(genome, self.actions(genome).sample_insert(rng))
        branches = list(genome.branches)
        b = int(rng.integers(len(branches)))
        branch = branches[b]
        if kind == "type":
            branch_type = U.pick(rng, self.options.branch_types)
            params = self._random_params(rng, branch_type)
            branches[b] = replace(branch, type=branch_type, **params)
        elif kind == "param":
            params = {k: v for k, v in self._random_params(rng, branch.type).items()
                      if v is not None}
            params["propagate"] = 1 - branch.propagate
            name = U.pick(rng, sorted(params))
            branches[b] = replace(branch, **{name: params[name]})
        else:
            field = "src1" if rng.random() < 0.5 else "src2"
            branches[b] = replace(branch, **{field: int(rng.integers(b + 1))})
        return self.genome(branches)

    # --- progressive actions ------------------------------------------------------

    def _scaled(self, branch: Branch, what: str, step: int) -> Branch | None:
        o = self.options
        if what == "channels":
            value = U.step_in_table(o.channels, branch.channels, step)
            return None if value is None else replace(branch, channels=value)
        moved = {}
        if branch.width is not None:
            moved["width"] = U.step_in_table(o.filter_widths, branch.width, step)
        if branch.pool is not None:
            moved["pool"] = U.step_in_table(o.pool_widths, branch.pool, step)
        moved = {k: v for k, v in moved.items() if v is not None}
        return replace(branch, **moved) if moved else None

    def _removable(self, genome: CellwiseGenome, target: int) -> bool:
        branch = genome.branches[target - 1]
        others = any(b.propagate for i, b in enumerate(genome.branches, start=1) if i != target)
        return others or not branch.propagate or branch.src1 > 0

    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        places = tuple(range(o.max_branches))
        return {"kind": U.KINDS, "target": tuple(range(1, o.max_branches + 1)),
                "op": o.branch_types, "place": places, "src2": places,
                "width": o.filter_widths, "pool": o.pool_widths, "channels": o.channels,
                "propagate": (0, 1)}

    def actions(self, genome: Genome) -> ActionSpace:
        self.validate(genome)
        g: CellwiseGenome = genome  # type: ignore[assignment]
        o = self.options
        n = len(g.branches)
        vocab = self.decision_vocabulary()

        prior = U.place_prior(vocab["place"], n, o.insert_prior)
        removable = [t for t in range(1, n + 1) if self._removable(g, t)]

        def next_decision(chosen: Mapping[str, Any]) -> Decision | None:
            kind = chosen.get("kind")
            if kind is None:
                return U.kind_decision(n < o.max_branches,
                                       n > o.min_branches and bool(removable))
            if kind == "keep":
                return None
            if kind == "remove":
                if "target" in chosen:
                    return None
                return make_decision("target", vocab["target"], lambda t: t in removable)
            if "op" not in chosen:
                return make_decision("op", vocab["op"], lambda _: True)
            if "place" not in chosen:
                return make_decision("place", vocab["place"], lambda p: p <= n, prior)
            if "src2" not in chosen:
                place = chosen["place"]
                return make_decision("src2", vocab["src2"], lambda s: s <= place)
            op = chosen["op"]
            for name, wanted in (("width", has_part(op, "conv")), ("pool", has_part(op, "pool")),
                                 ("channels", True), ("propagate", True)):
                if wanted and name not in chosen:
                    return make_decision(name, vocab[name], lambda _: True)
            return None

        return ActionSpace(self.scale_decisions(g), next_decision, U.action_from)

    def _removed(self, genome: Genome, target: int) -> CellwiseGenome:
        g: CellwiseGenome = genome  # type: ignore[assignment]
        if not self._removable(g, target):
            raise U.illegal(f"remove target = {target}: it is the only branch that reaches "
                            "the cell output")
        gone = g.branches[target - 1]
        branches = list(g.branches)
        if gone.propagate and gone.src1 > 0:  # keep the removed branch's path to the output
            branches[gone.src1 - 1] = replace(branches[gone.src1 - 1], propagate=1)
        return self.genome(U.remove_unit(branches, target))

    def _inserted(self, genome: Genome, action: Insert) -> CellwiseGenome:
        if not 0 <= action.src2 <= action.place:
            raise U.illegal(f"insert src2 = {action.src2} must be in 0..{action.place}")
        branches = genome.branches  # type: ignore[attr-defined]
        new = Branch(U.next_uid(branches), action.op, action.place, action.src2,
                     action.channels, action.width, action.pool,  # type: ignore[arg-type]
                     action.propagate if action.propagate is not None else 1)
        return self.genome(U.splice_insert(branches, action.place, new))

    # --- tokens --------------------------------------------------------------------

    def _vocab(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        places = tuple(range(o.max_branches))
        return {
            "type": o.branch_types,
            "width": (None, *o.filter_widths),
            "pool": (None, *o.pool_widths),
            "channels": o.channels,
            "src1": places,
            "src2": places,
            "propagate": (0, 1),
        }

    # --- shapes, costs, network ------------------------------------------------------

    def stage_shapes(self, input_shape: tuple[int, int, int]) -> list[Shape]:
        """The cell input shape of every stage (after the stem or a reduction)."""
        shape = Shape(self.options.stem_channels, input_shape[1], input_shape[2])
        shapes = [shape]
        for _ in range(1, self.options.stages):
            shape = shape.halved().with_channels(shape.c * 2)
            shapes.append(shape)
        return shapes

    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        g: CellwiseGenome = genome  # type: ignore[assignment]
        tally = Tally()
        stages = self.stage_shapes(input_shape)
        tally.conv_unit(Shape(*input_shape), stages[0].c, 3, stages[0])
        for s, shape in enumerate(stages):
            if s:
                tally.conv_unit(stages[s - 1], shape.c, 3, shape)
            for _ in range(self.options.cells_per_stage):
                self._cell_cost(tally, g, shape)
        tally.head(stages[-1], num_classes)
        return tally.result()

    def _cell_cost(self, tally: Tally, g: CellwiseGenome, x: Shape) -> None:
        live = live_branches(g)
        outs = [x]
        for index, branch in enumerate(g.branches, start=1):
            out = x.with_channels(branch.channels)
            outs.append(out)
            if index not in live:
                continue
            for part, src in zip(parts(branch.type), (branch.src1, branch.src2)):
                inp = outs[src]
                if part == "conv":
                    tally.conv_unit(inp, branch.channels, branch.width, out)
                    continue
                if part != "none":
                    tally.move([inp], inp)
                tally.adapt(inp, out)
            tally.move([out, out], out)
        kept = [outs[b] for b, br in enumerate(g.branches, start=1) if br.propagate]
        total = x.with_channels(sum(s.c for s in kept))
        if len(kept) > 1:
            tally.move(kept, total)
        tally.adapt(total, x)

    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> nn.Module:
        from epnas.spaces.cellwise import network  # torch, only when a network is built

        return network.build(genome, input_shape[0], self.stage_shapes(input_shape),  # type: ignore[arg-type]
                             self.options.cells_per_stage, num_classes)

    def sharing_keys(self, genome: Genome,
                     model: nn.Module) -> dict[str, dict[str, nn.Module]]:
        """``cell<k>/branch/<uid>/<type>`` per live branch and ``cell<k>/project`` (the
        cell's output projection), where ``k`` counts the cells of the network from 0 (the
        cell is repeated, each copy learns its own weights), plus ``stem``,
        ``reduction<s>`` (the stride-2 unit before stage ``s`` >= 1) and ``head``."""
        from epnas.spaces.cellwise import network

        return network.sharing_keys(genome, model)  # type: ignore[arg-type]

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph:
        stages = self.stage_shapes(input_shape) if input_shape is not None else []
        return drawing.graph(genome, stages, self.options)  # type: ignore[arg-type]
