"""Architectures as graphs: nodes (layers, branches, cell nodes) with their ops and
output shapes, edges for inputs and skips; :func:`draw` renders one with matplotlib.

Nodes are drawn top to bottom in index order, which is a topological order in every
space (a unit only reads earlier units). An edge to the next node is a straight arrow;
longer edges arc out to the left (a main input from further back) or to the right
(skips and second inputs), so they never cross the boxes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from epnas.costmodel import Shape
from epnas.spaces.cellwise import CellwiseGenome, live_branches, parts
from epnas.spaces.genome import Genome
from epnas.spaces.layerwise import CONV_OPS, LayerwiseGenome
from epnas.spaces.nb201 import EDGES, NB201Genome
from epnas.spaces.registry import space_of


@dataclass(frozen=True)
class Node:
    """A box: ``label`` (the op), ``detail`` (parameters, output shape); ``kind`` picks the
    colour: ``io``, ``conv``, ``pool``, ``join`` or ``dead`` (built by no path to the output).
    """

    label: str
    detail: str = ""
    kind: str = "conv"


@dataclass(frozen=True)
class Edge:
    """Data flowing from node ``src`` to node ``dst``.

    ``style``: ``main`` (a main input, solid), ``skip`` (a skip or second input, dashed,
    drawn on the right) or ``out`` (into the output join, thin and grey).
    """

    src: int
    dst: int
    style: str = "main"
    label: str = ""

    @property
    def skip(self) -> bool:
        return self.style == "skip"


@dataclass(frozen=True)
class Graph:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    note: str = ""


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("ch") else "s")


def shape_text(shape: Shape) -> str:
    return f"{shape.c}×{shape.h}×{shape.w}"


def graph_of(genome: Genome, input_shape: tuple[int, int, int] | None = None,
             num_classes: int | None = None) -> Graph | None:
    """The graph of ``genome``; shapes are shown when ``input_shape`` is given. None for a
    space this module cannot draw (user-defined spaces: the report shows their text)."""
    if isinstance(genome, LayerwiseGenome):
        return _layerwise(genome, input_shape, num_classes)
    if isinstance(genome, CellwiseGenome):
        return _cellwise(genome, input_shape)
    if isinstance(genome, NB201Genome):
        return _nb201(genome, input_shape)
    return None


def _layerwise(g: LayerwiseGenome, input_shape: tuple[int, int, int] | None,
               num_classes: int | None) -> Graph:
    space = space_of(g)
    shapes: dict[int, Shape] = {}
    live: set[int] = set()
    stem_detail = f"3×3, {space.options.stem_channels}"  # type: ignore[attr-defined]
    if input_shape is not None:
        stem, plans = space.plan(g, input_shape)  # type: ignore[attr-defined]
        shapes = {p.index: p.out for p in plans}
        live = set(shapes)
        stem_detail += f" → {shape_text(stem)}"
    nodes = [Node("input", "×".join(map(str, input_shape)) if input_shape else "", "io"),
             Node("stem conv", stem_detail, "io")]
    edges = [Edge(0, 1)]
    for i, layer in enumerate(g.layers, start=1):
        if layer.op in CONV_OPS:
            label = f"{layer.op} {layer.width}×{layer.width}, {layer.channels}, {layer.act}"
            kind = "conv"
        elif layer.op == "add":
            label, kind = "add", "join"
        else:
            label, kind = f"{layer.op} {layer.width}×{layer.width} /2", "pool"
        detail = shape_text(shapes[i]) if i in shapes else ""
        if input_shape is not None and i not in live:
            kind, detail = "dead", "unused: no path to the output"
        nodes.append(Node(label, detail, kind))
        edges.append(Edge(layer.src1 + 1, i + 1))
        if layer.src2 >= 0:
            edges.append(Edge(layer.src2 + 1, i + 1, "skip"))
    head = "global avg pool → linear"
    nodes.append(Node("head", head + (f", {num_classes} classes" if num_classes else ""), "io"))
    edges.append(Edge(len(g.layers) + 1, len(g.layers) + 2))
    return Graph(f"layerwise, {_count(len(g.layers), 'layer')}", tuple(nodes), tuple(edges),
                 "solid: Src1 (main input); dashed: Src2 skip, joined by addition")


def _cellwise(g: CellwiseGenome, input_shape: tuple[int, int, int] | None) -> Graph:
    space = space_of(g)
    o = space.options
    stages = space.stage_shapes(input_shape) if input_shape else []  # type: ignore[attr-defined]
    x = stages[0] if stages else None
    live = live_branches(g)
    nodes = [Node("cell input", shape_text(x) if x else "", "io")]
    edges = []
    for b, branch in enumerate(g.branches, start=1):
        first, second = parts(branch.type)
        params = [f"k{branch.width}"] if branch.width else []
        params += [f"p{branch.pool}"] if branch.pool else []
        params.append(f"{branch.channels} ch")
        out = f" → {shape_text(x.with_channels(branch.channels))}" if x else ""
        detail = ", ".join(params) + out
        kind = "conv" if "conv" in (first, second) else "pool"
        if b not in live:
            kind, detail = "dead", "unused: reaches no propagated branch"
        nodes.append(Node(f"{first} + {second}", detail, kind))
        edges.append(Edge(branch.src1, b, label=first))
        edges.append(Edge(branch.src2, b, "skip", second))
    kept = [b for b, br in enumerate(g.branches, start=1) if br.propagate]
    width = sum(g.branches[b - 1].channels for b in kept)
    detail = f"{width} ch" + (f" → 1×1 to {x.c}" if x and width != x.c else "")
    nodes.append(Node("concat", detail, "join"))
    edges += [Edge(b, len(nodes) - 1, "out") for b in kept]
    macro = " → ".join(shape_text(s) for s in stages)
    note = (f"{o.cells_per_stage} cells per stage, {o.stages} stages"  # type: ignore[attr-defined]
            + (f" ({macro})" if macro else "") + "; solid: Src1, dashed: Src2")
    title = f"cellwise cell, {_count(len(g.branches), 'branch')}"
    return Graph(title, tuple(nodes), tuple(edges), note)


def _nb201(g: NB201Genome, input_shape: tuple[int, int, int] | None) -> Graph:
    space = space_of(g)
    stages = space.stage_shapes(input_shape) if input_shape else []  # type: ignore[attr-defined]
    x = shape_text(stages[0]) if stages else ""
    nodes = (Node("node 0 (cell input)", x, "io"), Node("node 1", x, "join"),
             Node("node 2", x, "join"), Node("node 3 (cell output)", x, "io"))
    edges = tuple(Edge(src, dst, "skip" if op == "skip_connect" else "main", op)
                  for op, (src, dst) in zip(g.ops, EDGES) if op != "none")
    macro = " → ".join(shape_text(s) for s in stages)
    n = space.options.cells_per_stage  # type: ignore[attr-defined]
    note = f"{n} cells per stage, 3 stages" + (f" ({macro})" if macro else "") + \
        "; each node sums its inputs; 'none' edges are left out"
    return Graph("NAS-Bench-201 cell", nodes, edges, note)


# --- drawing ---------------------------------------------------------------------------

_COLOURS = {"io": "#e8eef7", "conv": "#cfe0fc", "pool": "#d5f0dc", "join": "#fde7c8",
            "dead": "#f2f2f2"}
_BOX_W, _BOX_H, _STEP = 4.2, 0.78, 1.25  # box size and vertical pitch, in data units
_INCH = 0.62  # inches per data unit: fixes font size relative to boxes


def _bulge(span: int) -> float:
    """How far an arc over ``span`` nodes reaches out of the boxes."""
    return 0.3 + 0.2 * max(span - 1, 1)


def _straight(e: Edge) -> bool:
    return e.dst - e.src == 1 and not e.skip


def draw(graph: Graph) -> Figure:
    """Render ``graph`` (boxes top to bottom, arrows between them) as a figure."""
    n = len(graph.nodes)
    ys = [-i * _STEP for i in range(n)]
    arcs = [e for e in graph.edges if not _straight(e)]
    room = 1.5 if any(e.label for e in arcs) else 0.4  # for the labels beside the arcs
    left = max((_bulge(e.dst - e.src) for e in arcs if not e.skip), default=0.0)
    right = max((_bulge(e.dst - e.src) for e in arcs if e.skip), default=0.0)
    x0, x1 = -_BOX_W / 2 - left - room, _BOX_W / 2 + right + room
    y0, y1 = ys[-1] - _STEP, 0.9
    fig = Figure(figsize=((x1 - x0) * _INCH, (y1 - y0) * _INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    ax.text(0, y1 - 0.35, graph.title, ha="center", va="center", fontsize=11, weight="bold")
    if graph.note:  # wrapped to the figure's width (a 7.5 pt character is about 4.3 pt wide)
        chars = int((x1 - x0) * _INCH * 72 / 4.3)
        ax.text(0, y0 + 0.45, textwrap.fill(graph.note, chars), ha="center", va="center",
                fontsize=7.5, color="#555555")
    colours = {"main": "#3b5b8c", "skip": "#c0504d", "out": "#9a9a9a"}
    labelled: list[tuple[float, float]] = []  # arc label positions so far, to avoid overlaps
    boxes = []
    for node, y in zip(graph.nodes, ys):
        box = FancyBboxPatch((-_BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                             boxstyle="round,pad=0,rounding_size=0.12",
                             facecolor=_COLOURS.get(node.kind, "#ffffff"),
                             edgecolor="#999999" if node.kind == "dead" else "#3b5b8c",
                             linestyle="--" if node.kind == "dead" else "-", linewidth=1)
        ax.add_patch(box)
        boxes.append(box)
        colour = "#888888" if node.kind == "dead" else "#111111"
        ax.text(0, y + (0.14 if node.detail else 0), node.label, ha="center", va="center",
                fontsize=9, weight="bold", color=colour)
        if node.detail:
            ax.text(0, y - 0.19, node.detail, ha="center", va="center", fontsize=7.5,
                    color=colour)
    for e in graph.edges:
        style = dict(arrowstyle="-|>", mutation_scale=9,
                     linewidth=0.8 if e.style == "out" else 1, color=colours[e.style],
                     linestyle=(0, (4, 2)) if e.skip else "-")
        if _straight(e):
            ax.add_patch(FancyArrowPatch((0, ys[e.src]), (0, ys[e.dst]), patchA=boxes[e.src],
                                         patchB=boxes[e.dst], **style))
            if e.label:
                ax.text(0.12, (ys[e.src] + ys[e.dst]) / 2, e.label, fontsize=7, va="center",
                        color=style["color"])
            continue
        sign = 1 if e.skip else -1  # skips on the right, long main inputs on the left
        x = sign * _BOX_W / 2
        bulge = _bulge(e.dst - e.src)
        # arc3 puts its control point rad * dy beside the chord: a negative rad bends a
        # downward edge to +x. The curve reaches half way to the control point.
        rad = sign * -2 * bulge / abs(ys[e.dst] - ys[e.src])
        ax.add_patch(FancyArrowPatch((x, ys[e.src]), (x, ys[e.dst]),
                                     connectionstyle=f"arc3,rad={rad}", **style))
        if e.label:
            lx, ly = x + sign * bulge, (ys[e.src] + ys[e.dst]) / 2
            while any(abs(lx - px) < 1.2 and abs(ly - py) < 0.3 for px, py in labelled):
                ly -= 0.32
            labelled.append((lx, ly))
            ax.text(lx, ly, e.label, fontsize=7,
                    ha="left" if e.skip else "right", va="center", color=style["color"],
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    return fig
