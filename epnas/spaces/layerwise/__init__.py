"""The ``layerwise`` space (its genome, search moves, cost, network, sharing keys and
drawing live in this package; see :mod:`epnas.spaces.layerwise.space`)."""

from epnas.spaces.layerwise.genome import (
    CONV_OPS,
    LAYER_OPS,
    POOL_OPS,
    Layer,
    LayerPlan,
    LayerwiseGenome,
    LayerwiseOptions,
)
from epnas.spaces.layerwise.space import LayerwiseSpace

__all__ = ["CONV_OPS", "LAYER_OPS", "POOL_OPS", "Layer", "LayerPlan", "LayerwiseGenome",
           "LayerwiseOptions", "LayerwiseSpace"]
