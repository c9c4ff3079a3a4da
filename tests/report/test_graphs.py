"""Architecture graphs: the nodes, edges and shapes drawn match the genome and the cost
model's shapes, for every registered space."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import epnas
from epnas.report.graphs import draw, graph_of, shape_text
from epnas.report.plots import png
from epnas.spaces.cellwise import Branch, live_branches
from epnas.spaces.layerwise import Layer


def test_layerwise_graph_follows_src1_src2_and_the_planned_shapes() -> None:
    space = epnas.spaces.get("layerwise")
    genome = space.genome([Layer(1, "conv", 0, -1, 3, 32, "relu"),
                           Layer(2, "maxpool", 1, -1, 2),
                           Layer(3, "conv", 1, 0, 5, 64, "crelu"),  # dead: nothing reads it
                           Layer(4, "sepconv", 2, 1, 3, 16, "swish")])
    graph = graph_of(genome, (3, 16, 16), 10)
    labels = [n.label for n in graph.nodes]
    assert labels == ["input", "stem conv", "conv 3×3, 32, relu", "maxpool 2×2 /2",
                      "conv 5×5, 64, crelu", "sepconv 3×3, 16, swish", "head"]
    # node k + 1 is layer k's output (node 1 the stem, index 0 in the genome)
    assert {(e.src, e.dst, e.style) for e in graph.edges} == {
        (0, 1, "main"), (1, 2, "main"), (2, 3, "main"), (2, 4, "main"), (1, 4, "skip"),
        (3, 5, "main"), (2, 5, "skip"), (5, 6, "main")}
    assert graph.nodes[4].kind == "dead"
    # sepconv on the 32x8x8 pool output, joined with layer 1's 32x16x16 (pooled to 8x8)
    _, plans = space.plan(genome, (3, 16, 16))
    assert graph.nodes[5].detail == shape_text(plans[-1].out) == "16×8×8"
    assert graph.nodes[1].detail == "3×3, 16 → 16×16×16"
    assert "10 classes" in graph.nodes[-1].detail


def test_cellwise_graph() -> None:
    space = epnas.spaces.get("cellwise")
    genome = space.genome([Branch(1, "conv-maxpool", 0, 0, 16, 3, 2, 0),
                           Branch(2, "conv-none", 1, 0, 24, 5, None, 1),
                           Branch(3, "avgpool-none", 0, 0, 8, None, 3, 0)])  # dead
    graph = graph_of(genome, (1, 8, 8), 10)
    assert [n.kind for n in graph.nodes] == ["io", "conv", "conv", "dead", "join"]
    assert graph.nodes[2].detail == "k5, 24 ch → 24×8×8"
    assert graph.nodes[-1].detail == "24 ch → 1×1 to 16"  # one propagated branch, resized
    assert {(e.src, e.dst, e.style, e.label) for e in graph.edges} == {
        (0, 1, "main", "conv"), (0, 1, "skip", "maxpool"), (1, 2, "main", "conv"),
        (0, 2, "skip", "none"), (0, 3, "main", "avgpool"), (0, 3, "skip", "none"),
        (2, 4, "out", "")}
    assert live_branches(genome) == {1, 2}
    assert "16×8×8 → 32×4×4 → 64×2×2" in graph.note


def test_nb201_graph_leaves_out_none_edges() -> None:
    genome = epnas.spaces.get("nb201").from_arch(
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    graph = graph_of(genome, (3, 32, 32), 10)
    assert len(graph.nodes) == 4
    assert {(e.src, e.dst, e.label) for e in graph.edges} == {
        (0, 1, "nor_conv_3x3"), (1, 2, "skip_connect"), (0, 3, "avg_pool_3x3"),
        (2, 3, "nor_conv_1x1")}
    assert [e.style for e in graph.edges if e.label == "skip_connect"] == ["skip"]


@pytest.mark.parametrize("space_name", epnas.spaces.names())
def test_every_space_draws_with_and_without_shapes(space_name: str) -> None:
    space = epnas.spaces.get(space_name)
    genome = space.sample(np.random.default_rng(0))
    for shape in ((3, 32, 32), None):
        graph = graph_of(genome, shape, 10 if shape else None)
        assert graph is not None and len(graph.nodes) >= 3
        assert all(0 <= e.src < e.dst < len(graph.nodes) for e in graph.edges)
        image = Image.open(io.BytesIO(png(draw(graph))))
        assert image.format == "PNG" and image.width > 200 and image.height > 200
