"""The ``layerwise`` space: a chain of layers with skips, searched layer by layer.

Layer ``i`` (1..n) reads layer ``src1`` (0 = the stem output) and, when ``src2`` is
not -1, adds the skip ``src2`` to its output using the join rule of
:mod:`epnas.costmodel`. The network is stem (3x3 conv-BN-ReLU) -> layers -> global
average pool -> linear; the last layer feeds the head. Layers that do not reach the
last layer (through Src1 or Src2 of later layers) are not built and cost nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from epnas.costmodel import Cost, Shape, Tally, join_shape
from epnas.errors import GenomeError, SpaceError
from epnas.nn import channel_factor
from epnas.spaces import _units as U
from epnas.spaces.base import SAMPLE_TRIES
from epnas.spaces.genome import ActionSpace, Decision, Genome, Insert, make_decision
from epnas.spaces.graph import Graph
from epnas.spaces.layerwise import drawing
from epnas.spaces.layerwise.genome import (
    CONV_OPS,
    POOL_OPS,
    Layer,
    LayerPlan,
    LayerwiseGenome,
    LayerwiseOptions,
)
from epnas.spaces.units import UnitSpace

if TYPE_CHECKING:
    from torch import nn


class LayerwiseSpace(UnitSpace):
    """Layer-by-layer search: conv, separable conv, max/avg pool and add layers with skips."""

    Options = LayerwiseOptions
    options: LayerwiseOptions
    steps_per_episode = 10  # the paper's T for layer-by-layer search
    limit_options = ("min_layers", "max_layers")
    unit_field, unit_class, unit_word = "layers", Layer, "layer"
    genome_class = LayerwiseGenome

    # --- genomes -----------------------------------------------------------------

    def validate(self, genome: Genome) -> None:
        o = self.options
        for i, layer in enumerate(self._checked_units(genome), start=1):
            f = f"layers[{i}]"
            U.check_choice(f"{f}.op", layer.op, o.ops)
            U.check_ref(f"{f}.src1", layer.src1, 0, min(i - 1, o.max_layers - 1))
            U.check_ref(f"{f}.src2", layer.src2, 0, min(i - 1, o.max_layers - 1),
                        allow_none=True)
            if layer.op in CONV_OPS:
                U.check_choice(f"{f}.width", layer.width, o.filter_widths)
                U.check_choice(f"{f}.channels", layer.channels, o.channels)
                U.check_choice(f"{f}.act", layer.act, o.activations)
                continue
            if layer.op in POOL_OPS:
                U.check_choice(f"{f}.width", layer.width, o.pool_widths)
            else:
                U.check_unused(f"{f}.width", layer.width, "an add layer has no kernel")
            U.check_unused(f"{f}.channels", layer.channels, f"a {layer.op} layer keeps channels")
            U.check_unused(f"{f}.act", layer.act, f"a {layer.op} layer has no activation")

    def describe(self, genome: Genome) -> str:
        """E.g. ``conv3:32:relu max2 add+1``: op, kernel, channels, activation; ``<s`` marks a
        Src1 other than the previous layer and ``+s`` a skip from layer s."""
        parts = []
        for i, layer in enumerate(genome.layers, start=1):  # type: ignore[attr-defined]
            if layer.op in CONV_OPS:
                text = f"{layer.op}{layer.width}:{layer.channels}:{layer.act}"
            else:
                text = layer.op.replace("pool", "") + (str(layer.width) if layer.width else "")
            if layer.src1 != i - 1:
                text += f"<{layer.src1}"
            if layer.src2 >= 0:
                text += f"+{layer.src2}"
            parts.append(text)
        return " ".join(parts)

    # --- sampling ----------------------------------------------------------------

    def _random_layer(self, rng: np.random.Generator, index: int, uid: int) -> Layer:
        o = self.options
        op = U.pick(rng, o.ops)
        src1 = index - 1 if rng.random() < 0.75 else int(rng.integers(index))
        src1 = min(src1, o.max_layers - 1)
        if op == "add" or rng.random() < 0.3:
            src2 = min(int(rng.integers(index)), o.max_layers - 1)
        else:
            src2 = -1
        return Layer(uid, op, src1, src2, **self._random_params(rng, op))

    def _random_params(self, rng: np.random.Generator, op: str) -> dict[str, Any]:
        o = self.options
        if op in CONV_OPS:
            return {"width": U.pick(rng, o.filter_widths), "channels": U.pick(rng, o.channels),
                    "act": U.pick(rng, o.activations)}
        if op in POOL_OPS:
            return {"width": U.pick(rng, o.pool_widths)}
        return {}

    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> LayerwiseGenome:
        o = self.options
        if depth is None:
            depth = int(rng.integers(o.min_layers, o.max_layers + 1))
        if not o.min_layers <= depth <= o.max_layers:
            raise GenomeError(f"depth = {depth} must be in {o.min_layers}..{o.max_layers}")
        return self.genome([self._random_layer(rng, i, i) for i in range(1, depth + 1)])

    def _mutation(self, genome: LayerwiseGenome, rng: np.random.Generator) -> LayerwiseGenome:
        kind = U.pick(rng, ("op", "param", "src", "grow"))
        if kind == "grow":
            return self.apply(genome, self.actions(genome).sample_insert(rng))
        layers = list(genome.layers)
        i = int(rng.integers(len(layers)))
        layer = layers[i]
        if kind == "op":
            fresh = self._random_layer(rng, i + 1, layer.uid)
            layers[i] = replace(fresh, src1=layer.src1, src2=layer.src2)
        elif kind == "param":
            params = self._random_params(rng, layer.op)
            if params:
                name = U.pick(rng, sorted(params))
                layers[i] = replace(layer, **{name: params[name]})
        else:
            limit = min(i, self.options.max_layers - 1)
            if rng.random() < 0.5:
                layers[i] = replace(layer, src1=int(rng.integers(limit + 1)))
            else:
                layers[i] = replace(layer, src2=int(rng.integers(-1, limit + 1)))
        return self.genome(layers)

    # --- progressive actions ------------------------------------------------------

    def _scaled(self, layer: Layer, what: str, step: int) -> Layer | None:
        """``layer`` moved one table step, or None when it cannot move that way."""
        o = self.options
        if what == "channels" and layer.op in CONV_OPS:
            value = U.step_in_table(o.channels, layer.channels, step)
            return None if value is None else replace(layer, channels=value)
        if what == "width" and layer.op in (*CONV_OPS, *POOL_OPS):
            table = o.filter_widths if layer.op in CONV_OPS else o.pool_widths
            value = U.step_in_table(table, layer.width, step)
            return None if value is None else replace(layer, width=value)
        return None

    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        places = tuple(range(o.max_layers))
        return {"kind": U.KINDS, "target": tuple(range(1, o.max_layers + 1)), "op": o.ops,
                "place": places, "src2": (-1, *places), "width": o.filter_widths,
                "pool": o.pool_widths, "channels": o.channels, "act": o.activations}

    def actions(self, genome: Genome) -> ActionSpace:
        self.validate(genome)
        g: LayerwiseGenome = genome  # type: ignore[assignment]
        o = self.options
        n = len(g.layers)
        vocab = self.decision_vocabulary()

        prior = U.place_prior(vocab["place"], n, o.insert_prior)

        def next_decision(chosen: Mapping[str, Any]) -> Decision | None:
            kind = chosen.get("kind")
            if kind is None:
                return U.kind_decision(n < o.max_layers, n > o.min_layers)
            if kind == "keep":
                return None
            if kind == "remove":
                if "target" in chosen:
                    return None
                return make_decision("target", vocab["target"], lambda t: t <= n)
            if "op" not in chosen:
                return make_decision("op", vocab["op"], lambda op: op in o.insertable)
            op = chosen["op"]
            if "place" not in chosen:
                return make_decision("place", vocab["place"], lambda p: p <= n, prior)
            if "src2" not in chosen:
                place = chosen["place"]
                return make_decision(
                    "src2", vocab["src2"],
                    lambda s: s <= place and not (op == "add" and s == -1),
                )
            for name, wanted in (("width", op in CONV_OPS), ("pool", op in POOL_OPS),
                                 ("channels", op in CONV_OPS), ("act", op in CONV_OPS)):
                if wanted and name not in chosen:
                    return make_decision(name, vocab[name], lambda _: True)
            return None

        return ActionSpace(self.scale_decisions(g), next_decision, U.action_from)

    def _removed(self, genome: Genome, target: int) -> LayerwiseGenome:
        return self.genome(U.remove_unit(genome.layers, target))  # type: ignore[attr-defined]

    def _inserted(self, genome: Genome, action: Insert) -> LayerwiseGenome:
        o = self.options
        if action.op not in o.insertable:
            raise U.illegal(f"insert op = {action.op!r} is not one of {list(o.insertable)}")
        if not -1 <= action.src2 <= action.place:
            raise U.illegal(f"insert src2 = {action.src2} must be -1 or in 0..{action.place}")
        layers = genome.layers  # type: ignore[attr-defined]
        width = action.pool if action.op in POOL_OPS else action.width
        new = Layer(U.next_uid(layers), action.op, action.place, action.src2, width,
                    action.channels, action.act)
        return self.genome(U.splice_insert(layers, action.place, new))

    # --- tokens --------------------------------------------------------------------

    def _vocab(self) -> dict[str, tuple[Any, ...]]:
        o = self.options
        places = tuple(range(o.max_layers))
        return {
            "op": o.ops,
            "width": (None, *sorted(set(o.filter_widths) | set(o.pool_widths))),
            "channels": (None, *o.channels),
            "act": (None, *o.activations),
            "src1": places,
            "src2": (-1, *places),
        }

    # --- shapes, costs, network ------------------------------------------------------

    def plan(self, genome: LayerwiseGenome,
             input_shape: tuple[int, int, int]) -> tuple[Shape, list[LayerPlan]]:
        """The stem output shape and the shapes around every live layer, in order."""
        stem = Shape(self.options.stem_channels, input_shape[1], input_shape[2])
        return stem, self._plan_layers(genome, stem)

    def _plan_layers(self, genome: LayerwiseGenome, start: Shape) -> list[LayerPlan]:
        """The shapes around every live layer when layer 0 (the stem) outputs ``start``."""
        live = U.live_units(genome.layers, [len(genome.layers)])
        outs = [start]
        plans = []
        for index, layer in enumerate(genome.layers, start=1):
            inp = outs[layer.src1]
            if layer.op in CONV_OPS:
                main = inp.with_channels(layer.channels * channel_factor(layer.act))
            elif layer.op in POOL_OPS:
                main = inp.halved()
            else:
                main = inp
            skip = outs[layer.src2] if layer.src2 >= 0 else None
            out = join_shape(main, skip) if skip is not None else main
            outs.append(out)
            if index in live:
                plans.append(LayerPlan(index, layer, inp, main, skip, out))
        return plans

    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        stem, plans = self.plan(genome, input_shape)  # type: ignore[arg-type]
        tally = Tally()
        tally.conv_unit(Shape(*input_shape), stem.c, 3, stem)
        self._tally_layers(tally, plans)
        tally.head(plans[-1].out, num_classes)
        return tally.result()

    @staticmethod
    def _tally_layers(tally: Tally, plans: list[LayerPlan]) -> None:
        for p in plans:
            layer = p.layer
            if layer.op in CONV_OPS:
                tally.conv_unit(p.inp, layer.channels, layer.width, p.main,
                                separable=layer.op == "sepconv")
            elif layer.op in POOL_OPS and not (p.inp.h == p.inp.w == 1):
                tally.move([p.inp], p.main)
            if p.skip is not None:
                tally.adapt(p.main, p.out)
                tally.adapt(p.skip, p.out)
                tally.move([p.out, p.out], p.out)

    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> nn.Module:
        from epnas.spaces.layerwise import network  # torch, only when a network is built

        stem, plans = self.plan(genome, input_shape)  # type: ignore[arg-type]
        return network.build(input_shape[0], stem, plans, num_classes)

    def sharing_keys(self, genome: Genome,
                     model: nn.Module) -> dict[str, dict[str, nn.Module]]:
        """``layer/<uid>/<op>`` per built layer (its op, and its skip adapters when it has
        a skip), plus ``stem`` and ``head``."""
        from epnas.spaces.layerwise import network

        return network.sharing_keys(genome, model)  # type: ignore[arg-type]

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph:
        g: LayerwiseGenome = genome  # type: ignore[assignment]
        plan = self.plan(g, input_shape) if input_shape is not None else None
        return drawing.graph(g, self.options.stem_channels, input_shape, plan, num_classes)

    # --- blocks (DNA) --------------------------------------------------------------
    # A block is a stage: the layers up to and including a downsampling pool, cut only
    # where no later layer reads an earlier one, so the cut layer is all a block passes on.

    def _block_start(self, index: int, input_shape: tuple[int, int, int]) -> Shape:
        """What layer 0 of a part outputs: the stem for block 0, the block input after."""
        c, h, w = input_shape
        return Shape(self.options.stem_channels, h, w) if index == 0 else Shape(c, h, w)

    @staticmethod
    def _shifted(layer: Layer, by: int) -> Layer:
        return replace(layer, src1=layer.src1 + by,
                       src2=layer.src2 + by if layer.src2 >= 0 else -1)

    def _cuts(self, genome: LayerwiseGenome) -> list[int]:
        """0, the index of every stage's last layer, and the last layer's."""
        layers, low = genome.layers, self.options.min_layers
        n = len(layers)
        cuts = [0]
        for b in range(1, n):
            clean = all(layer.src1 >= b and (layer.src2 == -1 or layer.src2 >= b)
                        for layer in layers[b:])
            if layers[b - 1].op in POOL_OPS and clean and b - cuts[-1] >= low and n - b >= low:
                cuts.append(b)
        return [*cuts, n]

    def blocks(self, genome: Genome) -> list[Genome]:
        """One part per stage: a cut follows each pool layer that no later layer reads
        past (and leaves parts of at least ``min_layers`` layers); a part's layer 0 is
        the previous stage's last layer (the stem for the first)."""
        self.validate(genome)
        g: LayerwiseGenome = genome  # type: ignore[assignment]
        cuts = self._cuts(g)
        return [self.genome([self._shifted(layer, -start) for layer in g.layers[start:end]])
                for start, end in itertools.pairwise(cuts)]

    def assemble(self, parts: Sequence[Genome]) -> Genome:
        """Parts chained in order; uids are kept when they are unique, else renumbered."""
        layers: list[Layer] = []
        for part in parts:
            self.validate(part)
            start = len(layers)
            layers += [self._shifted(layer, start) for layer in part.layers]  # type: ignore[attr-defined]
        if len({layer.uid for layer in layers}) != len(layers):
            layers = [replace(layer, uid=i) for i, layer in enumerate(layers, start=1)]
        return self.genome(layers)

    def block_outputs(self, genome: Genome) -> list[str]:
        """``layers.<j>``: the built layer that ends each stage."""
        g: LayerwiseGenome = genome  # type: ignore[assignment]
        self.validate(g)
        built = sorted(U.live_units(g.layers, [len(g.layers)]))
        return [f"layers.{built.index(end)}" for end in self._cuts(g)[1:]]

    def sample_block(self, rng: np.random.Generator, index: int, count: int,
                     input_shape: tuple[int, int, int],
                     output_shape: tuple[int, int, int]) -> Genome:
        """A random genome (:meth:`draw`) of ``min_layers`` to ``max_layers // count``
        layers, redrawn until it downsamples ``input_shape`` to ``output_shape``'s size."""
        o = self.options
        if count * o.min_layers > o.max_layers:
            raise SpaceError(f"{count} blocks of at least min_layers = {o.min_layers} layers "
                             f"exceed max_layers = {o.max_layers}")
        high = max(o.min_layers, o.max_layers // count)
        start = self._block_start(index, input_shape)
        for _ in range(SAMPLE_TRIES):
            part = self.draw(rng, depth=int(rng.integers(o.min_layers, high + 1)))
            out = self._plan_layers(part, start)[-1].out
            if (out.h, out.w) == tuple(output_shape[1:]):
                return part
        raise SpaceError(f"no {self.name} block of {o.min_layers}..{high} layers maps "
                         f"{start.h}x{start.w} to {output_shape[1]}x{output_shape[2]} in "
                         f"{SAMPLE_TRIES} random draws; allow more layers (max_layers) or "
                         "pools (ops)")

    def block_cost(self, part: Genome, index: int,
                   input_shape: tuple[int, int, int]) -> Cost:
        start = self._block_start(index, input_shape)
        tally = Tally()
        if index == 0:
            tally.conv_unit(Shape(*input_shape), start.c, 3, start)
        self._tally_layers(tally, self._plan_layers(part, start))  # type: ignore[arg-type]
        return tally.result()

    def block_shape(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        out = self._plan_layers(part, self._block_start(index, input_shape))[-1].out  # type: ignore[arg-type]
        return (out.c, out.h, out.w)

    def build_block(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> nn.Module:
        from epnas.spaces.layerwise import network

        start = self._block_start(index, input_shape)
        plans = self._plan_layers(part, start)  # type: ignore[arg-type]
        return network.build_block(input_shape[0], start if index == 0 else None, plans)
