"""The ``multistage`` space (ENAS4D's multi-stage early-exit networks; its genome,
search moves, cost, network and drawing live in this package)."""

from epnas.spaces.multistage.genome import Block, MultistageGenome, MultistageOptions

__all__ = ["Block", "MultistageGenome", "MultistageOptions"]
