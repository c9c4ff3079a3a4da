"""The report's drawing of a NAS-Bench-201 cell: four nodes, the non-``none`` edges."""

from __future__ import annotations

from epnas.costmodel import Shape
from epnas.spaces.graph import Edge, Graph, Node, shape_text
from epnas.spaces.nb201.genome import EDGES, STAGES


def graph(ops: tuple[str, ...], stages: list[Shape], cells_per_stage: int) -> Graph:
    """The cell, with the shapes of the first stage when ``stages`` are given."""
    x = shape_text(stages[0]) if stages else ""
    nodes = (Node("node 0 (cell input)", x, "io"), Node("node 1", x, "join"),
             Node("node 2", x, "join"), Node("node 3 (cell output)", x, "io"))
    edges = tuple(Edge(src, dst, "skip" if op == "skip_connect" else "main", op)
                  for op, (src, dst) in zip(ops, EDGES) if op != "none")
    macro = " → ".join(shape_text(s) for s in stages)
    note = f"{cells_per_stage} cells per stage, {STAGES} stages" + \
        (f" ({macro})" if macro else "") + "; each node sums its inputs; 'none' edges are left out"
    return Graph("NAS-Bench-201 cell", nodes, edges, note)
