"""The report's drawing of a layerwise genome: input, stem, one node per layer, head."""

from __future__ import annotations

from epnas.costmodel import Shape
from epnas.spaces.graph import Edge, Graph, Node, count_text, shape_text
from epnas.spaces.layerwise.genome import CONV_OPS, LayerPlan, LayerwiseGenome


def graph(g: LayerwiseGenome, stem_channels: int, input_shape: tuple[int, int, int] | None,
          plan: tuple[Shape, list[LayerPlan]] | None, num_classes: int | None) -> Graph:
    """Node k + 1 is layer k's output (node 0 the input, node 1 the stem); ``plan`` (the
    space's shape plan at ``input_shape``) adds the shapes and marks dead layers."""
    shapes: dict[int, Shape] = {}
    live: set[int] = set()
    stem_detail = f"3×3, {stem_channels}"
    if plan is not None:
        stem, plans = plan
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
        if plan is not None and i not in live:
            kind, detail = "dead", "unused: no path to the output"
        nodes.append(Node(label, detail, kind))
        edges.append(Edge(layer.src1 + 1, i + 1))
        if layer.src2 >= 0:
            edges.append(Edge(layer.src2 + 1, i + 1, "skip"))
    head = "global avg pool → linear"
    nodes.append(Node("head", head + (f", {num_classes} classes" if num_classes else ""), "io"))
    edges.append(Edge(len(g.layers) + 1, len(g.layers) + 2))
    return Graph(f"layerwise, {count_text(len(g.layers), 'layer')}", tuple(nodes),
                 tuple(edges), "solid: Src1 (main input); dashed: Src2 skip, joined by addition")
