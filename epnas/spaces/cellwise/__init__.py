"""The ``cellwise`` space (its genome, search moves, cost, network, sharing keys and
drawing live in this package; see :mod:`epnas.spaces.cellwise.space`)."""

from epnas.spaces.cellwise.genome import (
    BRANCH_TYPES,
    PARTS,
    Branch,
    CellwiseGenome,
    CellwiseOptions,
    live_branches,
    parts,
)
from epnas.spaces.cellwise.space import CellwiseSpace

__all__ = ["BRANCH_TYPES", "PARTS", "Branch", "CellwiseGenome", "CellwiseOptions",
           "CellwiseSpace", "live_branches", "parts"]
