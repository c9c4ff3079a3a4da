"""Torch primitives shared by the spaces' builders: the ops and the join rule.

This package module imports no torch: the names and shape rules of the ops live here,
so spaces validate and cost genomes without it; the modules are in :mod:`epnas.nn.ops`.
Each space's builder lives with the space (``epnas/spaces/<name>/``).
"""

ACTIVATIONS = ("relu", "crelu", "elu", "selu", "swish")


def channel_factor(act: str | None) -> int:
    """How many output channels an activation makes per input channel (CReLU doubles)."""
    return 2 if act == "crelu" else 1


__all__ = ["ACTIVATIONS", "channel_factor"]
