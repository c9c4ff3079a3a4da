"""The ``multistage`` space: ENAS4D's multi-stage early-exit networks.

Network: the input resized to the genome's ``resolution`` (bilinear, when its side
differs) -> stem (3x3 conv-BN-ReLU, stride 1) -> S stages of MobileNetV2 inverted
residual blocks, each stage followed by an exit (optional 1x1 conv-BN-ReLU, global
average pool, linear). Stage ``s`` has ``widths[s]`` output channels; its first block
has stride ``strides[s]`` (a stride on a 1x1 map is an identity: ``ceil(H / 2)``), the
others stride 1. A genome chooses the resolution, each stage's depth (``depths``) and
each block's depthwise kernel (``kernels``) and expansion ratio (``expands``).

Progressive actions: one scale group per stage (``channels`` steps the expansion ratio
and ``width`` the kernel of every block of the stage that can move) plus a last group
for the input (``width`` steps the resolution); an insert appends a block to a stage
(kernel and ratio chosen), a remove drops a stage's last block. Both keep the stage's
depth in ``depths``, as once-for-all's elastic depth keeps a stage's first blocks.

Tokens: one per unit, a fixed length of ``1 + S * max(depths)``: the resolution, then
every block slot of every stage (a (kernel, ratio) pair, or empty past the stage's depth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from epnas.costmodel import Cost, Shape, Tally
from epnas.errors import GenomeError, SpaceError
from epnas.spaces import _units as U
from epnas.spaces.base import Space, scaled_count
from epnas.spaces.genome import (
    SCALE_CHOICES,
    Action,
    ActionSpace,
    Decision,
    Genome,
    Insert,
    Keep,
    Remove,
    Scale,
    make_decision,
)
from epnas.spaces.graph import Graph
from epnas.spaces.multistage import drawing
from epnas.spaces.multistage.genome import Block, MultistageGenome, MultistageOptions

if TYPE_CHECKING:
    from torch import nn

EMPTY = None  # the token value of a block slot past its stage's depth


class MultistageSpace(Space):
    """Multi-stage early-exit networks of inverted-residual blocks (ENAS4D)."""

    Options = MultistageOptions
    options: MultistageOptions
    steps_per_episode = 6

    def genome(self, resolution: int, stages: Any) -> MultistageGenome:
        """Make and validate a genome of this space."""
        genome = MultistageGenome(space=self.name, options=self.options, resolution=resolution,
                                  stages=tuple(tuple(stage) for stage in stages))
        self.validate(genome)
        return genome

    # --- genomes -----------------------------------------------------------------

    def validate(self, genome: Genome) -> None:
        self.check_member(genome)
        if not isinstance(genome, MultistageGenome):
            raise GenomeError("genome is not a MultistageGenome")
        o = self.options
        U.check_choice("resolution", genome.resolution, o.resolutions)
        if not isinstance(genome.stages, tuple) or not all(
                isinstance(stage, tuple) for stage in genome.stages):
            raise GenomeError("stages: must be a tuple of tuples of blocks")
        if len(genome.stages) != o.stages:
            raise GenomeError(f"stages: must hold one tuple of blocks per stage ({o.stages}), "
                              f"got {len(genome.stages)}")
        for s, stage in enumerate(genome.stages):
            if len(stage) not in o.depths:
                raise GenomeError(f"stages[{s}]: depth {len(stage)} is not one of "
                                  f"{list(o.depths)}")
            for j, block in enumerate(stage):
                if not isinstance(block, Block):
                    raise GenomeError(f"stages[{s}][{j}] is not a Block")
                U.check_choice(f"stages[{s}][{j}].kernel", block.kernel, o.kernels)
                U.check_choice(f"stages[{s}][{j}].expand", block.expand, o.expands)

    def from_structure(self, data: Mapping[str, Any]) -> MultistageGenome:
        unknown = set(data) - {"resolution", "stages"}
        if unknown:
            raise GenomeError(f"unknown key(s) {sorted(unknown)} in a multistage genome")
        if "resolution" not in data or "stages" not in data:
            raise GenomeError("a multistage genome needs 'resolution' and 'stages'")
        raw = data["stages"]
        if not isinstance(raw, list) or not all(isinstance(stage, list) for stage in raw):
            raise GenomeError("stages: must be a list of lists of block objects")
        stages = []
        for s, stage in enumerate(raw):
            blocks = []
            for j, item in enumerate(stage):
                item = U.unit_fields(item, f"stages[{s}]", j, {"kernel", "expand"})
                if set(item) != {"kernel", "expand"}:
                    raise GenomeError(f"stages[{s}][{j}]: needs 'kernel' and 'expand'")
                blocks.append(Block(**item))
            stages.append(blocks)
        return self.genome(data["resolution"], stages)

    def size(self, genome: Genome) -> int:
        """The number of blocks."""
        return sum(len(stage) for stage in genome.stages)  # type: ignore[attr-defined]

    def describe(self, genome: Genome) -> str:
        """E.g. ``r24 | k3e4 | k5e6 k3e2 | ...``: resolution, then each stage's blocks."""
        g: MultistageGenome = genome  # type: ignore[assignment]
        stages = [" ".join(f"k{b.kernel}e{b.expand}" for b in stage) for stage in g.stages]
        return " | ".join([f"r{g.resolution}", *stages])

    def scale_channels(self, genome: Genome, factor: float) -> MultistageGenome:
        """The same genome with the stem and every stage width scaled (see :class:`Space`)."""
        self.validate(genome)
        o = self.options
        space = type(self)(**{**dict(o), "stem_channels": scaled_count(o.stem_channels, factor),
                              "widths": tuple(scaled_count(w, factor) for w in o.widths)})
        space.name = self.name
        return space.genome(genome.resolution, genome.stages)  # type: ignore[attr-defined]

    # --- sampling and mutation -----------------------------------------------------

    def _random_block(self, rng: np.random.Generator) -> Block:
        return Block(U.pick(rng, self.options.kernels), U.pick(rng, self.options.expands))

    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> MultistageGenome:
        """``depth``: the total number of blocks, spread at random over the stages."""
        o = self.options
        low, high = o.depths[0], o.depths[-1]
        if depth is None:
            depths = [U.pick(rng, o.depths) for _ in range(o.stages)]
        else:
            if not o.stages * low <= depth <= o.stages * high:
                raise GenomeError(f"depth = {depth} blocks must be in {o.stages * low}.."
                                  f"{o.stages * high} ({o.stages} stages of {low}..{high})")
            depths = [low] * o.stages
            for _ in range(depth - o.stages * low):
                open_ = [s for s in range(o.stages) if depths[s] < high]
                depths[U.pick(rng, open_)] += 1
        stages = [[self._random_block(rng) for _ in range(d)] for d in depths]
        return self.genome(U.pick(rng, o.resolutions), stages)

    def mutate(self, genome: Genome, rng: np.random.Generator) -> MultistageGenome:
        self.validate(genome)
        return U.mutate_until_changed(genome, rng, self._mutation)

    def _mutation(self, g: MultistageGenome, rng: np.random.Generator) -> MultistageGenome:
        o = self.options
        kind = U.pick(rng, ("resolution", "kernel", "expand", "depth"))
        if kind == "resolution":
            return self.genome(U.pick(rng, o.resolutions), g.stages)
        stages = [list(stage) for stage in g.stages]
        s = int(rng.integers(len(stages)))
        if kind == "depth":
            depth = U.pick(rng, o.depths)
            stages[s] = (stages[s] + [self._random_block(rng) for _ in range(depth)])[:depth]
        else:
            j = int(rng.integers(len(stages[s])))
            table = o.kernels if kind == "kernel" else o.expands
            stages[s][j] = replace(stages[s][j], **{kind: U.pick(rng, table)})
        return self.genome(g.resolution, stages)

    # --- progressive actions ------------------------------------------------------

    def _scaled_block(self, block: Block, what: str, step: int) -> Block | None:
        if what == "width":
            value = U.step_in_table(self.options.kernels, block.kernel, step)
            return None if value is None else replace(block, kernel=value)
        value = U.step_in_table(self.options.expands, block.expand, step)
        return None if value is None else replace(block, expand=value)

    def _scaled(self, g: MultistageGenome, group: int, what: str,
                step: int) -> MultistageGenome | None:
        """``g`` with scale group ``group`` moved one step, None when nothing can move."""
        if group == self.options.stages:  # the input: width steps the resolution
            value = (U.step_in_table(self.options.resolutions, g.resolution, step)
                     if what == "width" else None)
            return None if value is None else replace(g, resolution=value)
        moved = [self._scaled_block(b, what, step) for b in g.stages[group]]
        if all(m is None for m in moved):
            return None
        stage = tuple(m or b for m, b in zip(moved, g.stages[group]))
        return replace(g, stages=(*g.stages[:group], stage, *g.stages[group + 1:]))

    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        stages = tuple(range(o.stages))
        return {"kind": U.KINDS, "target": stages, "place": stages, "width": o.kernels,
                "channels": o.expands}

    def actions(self, genome: Genome) -> ActionSpace:
        self.validate(genome)
        g: MultistageGenome = genome  # type: ignore[assignment]
        o = self.options
        vocab = self.decision_vocabulary()
        growable = {s for s, stage in enumerate(g.stages) if len(stage) < o.depths[-1]}
        shrinkable = {s for s, stage in enumerate(g.stages) if len(stage) > o.depths[0]}
        scale = []
        for group in range(o.stages + 1):
            def legal(choice: str, group: int = group) -> bool:
                if choice == "keep":
                    return True
                return self._scaled(g, group, choice[:-1], 1 if choice[-1] == "+" else -1) \
                    is not None

            scale.append(make_decision("scale", SCALE_CHOICES, legal))

        def next_decision(chosen: Mapping[str, Any]) -> Decision | None:
            kind = chosen.get("kind")
            if kind is None:
                return U.kind_decision(bool(growable), bool(shrinkable))
            if kind == "keep":
                return None
            if kind == "remove":
                return None if "target" in chosen else \
                    make_decision("target", vocab["target"], shrinkable.__contains__)
            for name, legal in (("place", growable.__contains__), ("width", None),
                                ("channels", None)):
                if name not in chosen:
                    return make_decision(name, vocab[name], legal or (lambda _: True))
            return None

        return ActionSpace(tuple(scale), next_decision, _action_from)

    def apply(self, genome: Genome, action: Action) -> MultistageGenome:
        self.validate(genome)
        g: MultistageGenome = genome  # type: ignore[assignment]
        o = self.options
        if isinstance(action, Keep):
            return g
        if isinstance(action, Scale):
            if not 0 <= action.group <= o.stages or action.what not in ("channels", "width") \
                    or action.step not in (-1, 1):
                raise U.illegal(f"{action}: group must be in 0..{o.stages}, what 'channels' "
                                "or 'width', step -1 or +1")
            scaled = self._scaled(g, action.group, action.what, action.step)
            if scaled is None:
                raise U.illegal(f"{action}: nothing of group {action.group} can move that way")
            self.validate(scaled)
            return scaled
        if not isinstance(action, Remove | Insert):
            raise U.illegal(f"{action!r} is not a multistage action")
        stage = action.target if isinstance(action, Remove) else action.place
        if not isinstance(stage, int) or not 0 <= stage < o.stages:
            raise U.illegal(f"stage = {stage!r} must be in 0..{o.stages - 1}")
        blocks = g.stages[stage]
        if isinstance(action, Remove):
            if len(blocks) <= o.depths[0]:
                raise U.illegal(f"remove: stage {stage} already has the minimum depth "
                                f"{o.depths[0]}")
            blocks = blocks[:-1]
        else:
            if action.op != "block":
                raise U.illegal(f"insert op = {action.op!r}: a multistage insert adds a 'block'")
            if len(blocks) >= o.depths[-1]:
                raise U.illegal(f"insert: stage {stage} already has the maximum depth "
                                f"{o.depths[-1]}")
            try:
                new = Block(action.width, action.channels)  # type: ignore[arg-type]
                U.check_choice("insert width (kernel)", new.kernel, o.kernels)
                U.check_choice("insert channels (expand)", new.expand, o.expands)
            except GenomeError as exc:
                raise U.illegal(str(exc)) from None
            blocks = (*blocks, new)
        return self.genome(g.resolution, (*g.stages[:stage], blocks, *g.stages[stage + 1:]))

    # --- tokens --------------------------------------------------------------------

    def _slots(self) -> tuple[Any, ...]:
        """Token values of a block slot: empty, then every (kernel, expand) pair."""
        o = self.options
        return (EMPTY, *((k, e) for k in o.kernels for e in o.expands))

    @property
    def token_fields(self) -> tuple[str, ...]:
        return ("unit",)

    @property
    def vocab_size(self) -> int:
        return len(self.options.resolutions) + len(self._slots())

    def encode(self, genome: Genome) -> list[int]:
        g: MultistageGenome = genome  # type: ignore[assignment]
        o = self.options
        offset, slots = len(o.resolutions), self._slots()
        tokens = [o.resolutions.index(g.resolution)]
        for stage in g.stages:
            values = [(b.kernel, b.expand) for b in stage]
            values += [EMPTY] * (o.depths[-1] - len(stage))
            tokens += [offset + slots.index(v) for v in values]
        return tokens

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """A resolution first; then each stage's slots: a block in the first
        ``depths[0]``, a block or empty in the others, and empty after an empty one."""
        o = self.options
        offset, slot_count = len(o.resolutions), o.depths[-1]
        if not prefix:
            return list(range(offset))
        slot = len(prefix) - 1
        if slot >= o.stages * slot_count:
            return []
        blocks = list(range(offset + 1, self.vocab_size))  # offset: the empty slot
        if slot % slot_count < o.depths[0]:
            return blocks
        return [offset] if prefix[-1] == offset else [*blocks, offset]

    def decode(self, tokens: list[int]) -> MultistageGenome:
        o = self.options
        offset, slots, slot_count = len(o.resolutions), self._slots(), o.depths[-1]
        if len(tokens) != 1 + o.stages * slot_count:
            raise GenomeError(f"tokens: a multistage genome has {1 + o.stages * slot_count} "
                              f"tokens, got {len(tokens)}")
        if not 0 <= tokens[0] < offset:
            raise GenomeError(f"tokens[0]: the resolution token must be in 0..{offset - 1}, "
                              f"got {tokens[0]}")
        stages = []
        for s in range(o.stages):
            row = tokens[1 + s * slot_count: 1 + (s + 1) * slot_count]
            if any(not offset <= t < self.vocab_size for t in row):
                raise GenomeError(f"tokens: stage {s}'s block tokens must be in "
                                  f"{offset}..{self.vocab_size - 1}, got {row}")
            values = [slots[t - offset] for t in row]
            depth = values.index(EMPTY) if EMPTY in values else slot_count
            if any(v is not EMPTY for v in values[depth:]):
                raise GenomeError(f"tokens: stage {s} has a block after an empty slot")
            stages.append([Block(*v) for v in values[:depth]])
        return self.genome(o.resolutions[tokens[0]], stages)

    # --- shapes, costs, network ------------------------------------------------------

    def exit_costs(self, genome: Genome, input_shape: tuple[int, int, int],
                   num_classes: int) -> list[Cost]:
        """Cost ``k`` is what an input leaving at exit ``k`` pays: the resize, stem,
        stages ``0..k`` and exits ``0..k`` (early-exit inference evaluates every exit it
        passes). The last equals :meth:`cost`."""
        g: MultistageGenome = genome  # type: ignore[assignment]
        tally = Tally()
        x = self._tally_input(tally, Shape(*input_shape), g.resolution)
        costs = []
        for s, stage in enumerate(g.stages):
            x = self._tally_stage(tally, x, s, stage)
            self.tally_exit(tally, x, num_classes)
            costs.append(tally.result())
        return costs

    def _tally_input(self, tally: Tally, x: Shape, resolution: int) -> Shape:
        """Tally the resize (when the input's side differs) and the stem; the stem output."""
        if (x.h, x.w) != (resolution, resolution):
            resized = Shape(x.c, resolution, resolution)
            tally.move([x], resized)
            x = resized
        stem = x.with_channels(self.options.stem_channels)
        tally.conv_unit(x, stem.c, 3, stem)
        return stem

    def _tally_stage(self, tally: Tally, x: Shape, s: int, stage: tuple[Block, ...]) -> Shape:
        """Tally stage ``s``'s blocks reading ``x``; the stage output."""
        width, stride = self.options.widths[s], self.options.strides[s]
        for j, block in enumerate(stage):
            x = _block_cost(tally, x, width, block, stride if j == 0 else 1)
        return x

    def tally_exit(self, tally: Tally, x: Shape, num_classes: int) -> None:
        """Tally the exit reading a stage output ``x``."""
        if self.options.exit_conv:
            tally.conv_unit(x, x.c, 1, x)
        tally.head(x, num_classes)

    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        """Every exit's head included (params), and a pass that computes every exit (FLOPs)."""
        return self.exit_costs(genome, input_shape, num_classes)[-1]

    def stage_shapes(self, genome: MultistageGenome) -> list[Shape]:
        """The stem output and each stage's output shape."""
        shape = Shape(self.options.stem_channels, genome.resolution, genome.resolution)
        shapes = [shape]
        for width, stride in zip(self.options.widths, self.options.strides):
            shape = (shape.halved() if stride == 2 else shape).with_channels(width)
            shapes.append(shape)
        return shapes

    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> nn.Module:
        from epnas.spaces.multistage import network  # torch, only when a network is built

        self.validate(genome)
        return network.build(genome, input_shape[0], num_classes)  # type: ignore[arg-type]

    def sharing_keys(self, genome: Genome,
                     model: nn.Module) -> dict[str, dict[str, nn.Module]]:
        """``stage<s>/block<j>/k<kernel>`` per block (a block's position in its stage and
        its kernel; another expansion ratio slices or pads the hidden channels),
        ``stem`` and ``exit<s>``."""
        g: MultistageGenome = genome  # type: ignore[assignment]
        units: dict[str, dict[str, nn.Module]] = {"stem": {"": model.stem}}
        for s, (stage, built) in enumerate(zip(g.stages, model.stages)):  # type: ignore[arg-type]
            for j, (block, module) in enumerate(zip(stage, built)):
                units[f"stage{s}/block{j}/k{block.kernel}"] = {"": module}
            units[f"exit{s}"] = {"": model.exits[s]}  # type: ignore[index]
        return units

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph:
        g: MultistageGenome = genome  # type: ignore[assignment]
        shapes = self.stage_shapes(g) if input_shape is not None else None
        return drawing.graph(g, input_shape, shapes, num_classes)

    # --- blocks (DNA) --------------------------------------------------------------
    # A block is a stage. A part (the genome of block k) is a genome of this space
    # whose stage k is the block; its other stages are fillers (the shallowest depth of
    # blocks with the first kernel and ratio of the tables), and its resolution is the
    # network's for block 0 (the resize and the stem belong to the first stage) and the
    # table's first, unused, for the others. The exits are no block's: they read the
    # stage outputs, whose shapes the options and the resolution fix.

    def _filler(self) -> tuple[Block, ...]:
        o = self.options
        return (Block(o.kernels[0], o.expands[0]),) * o.depths[0]

    def _part(self, index: int, resolution: int,
              blocks: tuple[Block, ...]) -> MultistageGenome:
        stages = [blocks if s == index else self._filler() for s in range(self.options.stages)]
        return self.genome(resolution if index == 0 else self.options.resolutions[0], stages)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.options.stages:
            raise SpaceError(f"block {index}: a multistage network has blocks 0.."
                             f"{self.options.stages - 1} (one per stage)")

    def _block_start(self, part: MultistageGenome, index: int,
                     input_shape: tuple[int, int, int]) -> Shape:
        """What stage ``index`` reads: the stem output for block 0, the input after."""
        self._check_index(index)
        if index == 0:
            r = part.resolution
            return Shape(self.options.stem_channels, r, r)
        return Shape(*input_shape)

    def _stage_out(self, index: int, start: Shape) -> Shape:
        """The output shape of stage ``index`` reading ``start``."""
        down = start.halved() if self.options.strides[index] == 2 else start
        return down.with_channels(self.options.widths[index])

    def blocks(self, genome: Genome) -> list[Genome]:
        """One part per stage (the first with the resolution; see the comment above)."""
        self.validate(genome)
        g: MultistageGenome = genome  # type: ignore[assignment]
        return [self._part(s, g.resolution, stage) for s, stage in enumerate(g.stages)]

    def assemble(self, parts: Sequence[Genome]) -> Genome:
        """Stage ``k`` from part ``k``, the resolution from part 0."""
        if len(parts) != self.options.stages:
            raise GenomeError(f"a multistage genome assembles from {self.options.stages} "
                              f"parts (one per stage), got {len(parts)}")
        for part in parts:
            self.validate(part)
        stages = [part.stages[s] for s, part in enumerate(parts)]  # type: ignore[attr-defined]
        return self.genome(parts[0].resolution, stages)  # type: ignore[attr-defined]

    def block_outputs(self, genome: Genome) -> list[str]:
        """``stages.<s>.<j>``: the last inverted residual of every stage."""
        self.validate(genome)
        return [f"stages.{s}.{len(stage) - 1}"
                for s, stage in enumerate(genome.stages)]  # type: ignore[attr-defined]

    def sample_block(self, rng: np.random.Generator, index: int, count: int,
                     input_shape: tuple[int, int, int],
                     output_shape: tuple[int, int, int]) -> Genome:
        """Random blocks for stage ``index`` (a depth of ``depths``); block 0 takes a
        resolution at which the first stage outputs ``output_shape``'s size.

        Raises:
            SpaceError: the teacher does not have one block per stage, or its sizes are
                not what this space's resolutions and strides give.
        """
        o = self.options
        if count != o.stages:
            raise SpaceError(f"a multistage network splits into its {o.stages} stages, one "
                             f"block each; the teacher has {count} blocks: name {o.stages} "
                             "block outputs (blocks=NAME,...) or set stages")
        self._check_index(index)
        size = tuple(output_shape[1:])

        def reaches(start: Shape) -> bool:
            out = self._stage_out(index, start)
            return (out.h, out.w) == size

        if index == 0:
            fits = [r for r in o.resolutions if reaches(Shape(o.stem_channels, r, r))]
        else:
            fits = [o.resolutions[0]] if reaches(Shape(*input_shape)) else []
        if not fits:
            raise SpaceError(f"block {index}: no multistage stage {index} maps "
                             f"{input_shape[1]}x{input_shape[2]} to {size[0]}x{size[1]} "
                             f"(resolutions {list(o.resolutions)}, strides {list(o.strides)})")
        blocks = tuple(self._random_block(rng) for _ in range(U.pick(rng, o.depths)))
        return self._part(index, U.pick(rng, fits), blocks)

    def block_cost(self, part: Genome, index: int,
                   input_shape: tuple[int, int, int]) -> Cost:
        """Stage ``index`` (after the resize and stem for block 0). The costs of a genome
        are its blocks' plus its exits': :meth:`cost` adds :meth:`tally_exit` of every
        stage output."""
        p: MultistageGenome = part  # type: ignore[assignment]
        self._check_index(index)
        tally = Tally()
        x = Shape(*input_shape)
        if index == 0:
            x = self._tally_input(tally, x, p.resolution)
        self._tally_stage(tally, x, index, p.stages[index])
        return tally.result()

    def block_shape(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        out = self._stage_out(index, self._block_start(part, index, input_shape))  # type: ignore[arg-type]
        return (out.c, out.h, out.w)

    def build_block(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> nn.Module:
        from epnas.spaces.multistage import network

        self._check_index(index)
        return network.build_block(part, index, input_shape[0])  # type: ignore[arg-type]


def _block_cost(tally: Tally, x: Shape, width: int, block: Block, stride: int) -> Shape:
    """Tally one inverted residual reading ``x``; returns its output shape."""
    hidden = x.with_channels(x.c * block.expand)
    inp = x
    if block.expand != 1:
        tally.conv_unit(x, hidden.c, 1, hidden)
        x = hidden
    down = x.halved() if stride == 2 else x
    tally.conv(x.c, x.c, block.kernel, down, groups=x.c)
    tally.bn(x.c)
    tally.move([x], down)
    out = down.with_channels(width)
    tally.conv_unit(down, width, 1, out)
    if stride == 1 and inp.c == width:
        tally.move([out, inp], out)
    return out


def _action_from(chosen: Mapping[str, Any]) -> Action:
    """The action of a complete set of sub-decisions (an insert always adds a block)."""
    return U.action_from({**chosen, "op": "block"} if chosen["kind"] == "insert" else chosen)
