"""The report's drawing of a multistage genome: input, stem, the blocks of each stage
and the exit after each stage."""

from __future__ import annotations

from epnas.costmodel import Shape
from epnas.spaces.graph import Edge, Graph, Node, count_text, shape_text
from epnas.spaces.multistage.genome import MultistageGenome


def graph(g: MultistageGenome, input_shape: tuple[int, int, int] | None,
          shapes: list[Shape] | None, num_classes: int | None) -> Graph:
    """``shapes`` (the stem's and each stage's output) add the shapes when given."""
    o = g.options
    size = f"resized to {g.resolution}×{g.resolution}"
    inp = "×".join(map(str, input_shape)) + ", " + size if input_shape else size
    stem = f"3×3, {o.stem_channels}" + (f" → {shape_text(shapes[0])}" if shapes else "")  # type: ignore[attr-defined]
    nodes = [Node("input", inp, "io"), Node("stem conv", stem, "io")]
    edges = [Edge(0, 1)]
    last = 1  # the node the next block reads
    classes = f", {num_classes} classes" if num_classes else ""
    for s, stage in enumerate(g.stages):
        for j, block in enumerate(stage):
            stride = o.strides[s] if j == 0 else 1  # type: ignore[attr-defined]
            label = f"MBConv{block.expand} {block.kernel}×{block.kernel}" + \
                (" /2" if stride == 2 else "")
            detail = shape_text(shapes[s + 1]) if shapes else f"{o.widths[s]} channels"  # type: ignore[attr-defined]
            nodes.append(Node(label, detail, "conv"))
            edges.append(Edge(last, len(nodes) - 1))
            last = len(nodes) - 1
        head = ("1×1 conv → " if o.exit_conv else "") + "avg pool → linear" + classes  # type: ignore[attr-defined]
        nodes.append(Node(f"exit {s}", head, "io"))
        edges.append(Edge(last, len(nodes) - 1, "out"))
    blocks = sum(len(stage) for stage in g.stages)
    return Graph(f"multistage, {count_text(len(g.stages), 'stage')}, "
                 f"{count_text(blocks, 'block')}", tuple(nodes), tuple(edges),
                 "MBConvE K×K: inverted residual, expansion E, depthwise kernel K (a residual "
                 "add where the shape is kept); an exit after every stage")
