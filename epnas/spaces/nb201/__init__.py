"""The ``nb201`` space (its genome, search moves, cost, network, sharing keys and drawing
live in this package; see :mod:`epnas.spaces.nb201.space`)."""

from epnas.spaces.nb201.genome import (
    EDGES,
    NB201_OPS,
    NB201Genome,
    NB201Options,
    parse_arch,
    to_arch,
)
from epnas.spaces.nb201.space import NB201Space

__all__ = ["EDGES", "NB201_OPS", "NB201Genome", "NB201Options", "NB201Space", "parse_arch",
           "to_arch"]
