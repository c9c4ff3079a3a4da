"""The ``multistage`` space (ENAS4D's multi-stage early-exit networks; its genome,
search moves, cost, network and drawing live in this package; see
:mod:`epnas.spaces.multistage.space`)."""

from epnas.spaces.multistage.genome import Block, MultistageGenome, MultistageOptions
from epnas.spaces.multistage.space import MultistageSpace

__all__ = ["Block", "MultistageGenome", "MultistageOptions", "MultistageSpace"]
