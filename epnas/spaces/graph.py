"""Architectures as graphs, the plain data a space's :meth:`~epnas.spaces.Space.graph`
hook returns and :func:`epnas.report.graphs.draw` renders.

Nodes are drawn top to bottom in index order, which must be a topological order (a node
only reads earlier nodes): every edge has ``src < dst``.
"""

from __future__ import annotations

from dataclasses import dataclass

from epnas.costmodel import Shape


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


def shape_text(shape: Shape) -> str:
    """``C×H×W``."""
    return f"{shape.c}×{shape.h}×{shape.w}"


def count_text(n: int, word: str) -> str:
    """``1 layer``, ``3 layers``, ``2 branches``."""
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("ch") else "s")
