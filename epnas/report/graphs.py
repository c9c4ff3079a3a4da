"""Architecture graphs for the report: :func:`graph_of` asks the genome's space for its
graph (:meth:`epnas.spaces.Space.graph`), :func:`draw` renders one with matplotlib.

Nodes are drawn top to bottom in index order, which is a topological order in every
space (a unit only reads earlier units). An edge to the next node is a straight arrow;
longer edges arc out to the left (a main input from further back) or to the right
(skips and second inputs), so they never cross the boxes.
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from epnas.spaces.genome import Genome
from epnas.spaces.graph import Edge, Graph, Node, shape_text
from epnas.spaces.registry import space_of

__all__ = ["Edge", "Graph", "Node", "draw", "graph_of", "shape_text"]


def graph_of(genome: Genome, input_shape: tuple[int, int, int] | None = None,
             num_classes: int | None = None) -> Graph | None:
    """The graph of ``genome``; shapes are shown when ``input_shape`` is given. None for a
    space that draws nothing (the report shows its text)."""
    return space_of(genome).graph(genome, input_shape, num_classes)


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
