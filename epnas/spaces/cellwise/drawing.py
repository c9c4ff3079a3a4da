"""The report's drawing of a cellwise genome: one cell, a node per branch."""

from __future__ import annotations

from epnas.costmodel import Shape
from epnas.spaces.cellwise.genome import CellwiseGenome, CellwiseOptions, live_branches, parts
from epnas.spaces.graph import Edge, Graph, Node, count_text, shape_text


def graph(g: CellwiseGenome, stages: list[Shape], o: CellwiseOptions) -> Graph:
    """The cell, with the shapes of the first stage when ``stages`` are given."""
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
    note = (f"{o.cells_per_stage} cells per stage, {o.stages} stages"
            + (f" ({macro})" if macro else "") + "; solid: Src1, dashed: Src2")
    title = f"cellwise cell, {count_text(len(g.branches), 'branch')}"
    return Graph(title, tuple(nodes), tuple(edges), note)
