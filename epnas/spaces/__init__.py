"""Architecture spaces: registry, genomes, actions and the built-in spaces (one package
each: ``layerwise``, ``cellwise``, ``nb201``, ``multistage``)."""

from epnas.spaces.base import SamplingOptions, Space
from epnas.spaces.cellwise import Branch, CellwiseGenome, CellwiseOptions, CellwiseSpace
from epnas.spaces.genome import (
    SCALE_CHOICES,
    Action,
    ActionSpace,
    Decision,
    Genome,
    Insert,
    Keep,
    Remove,
    Scale,
    SpaceOptions,
)
from epnas.spaces.layerwise import Layer, LayerwiseGenome, LayerwiseOptions, LayerwiseSpace
from epnas.spaces.multistage import Block, MultistageGenome, MultistageOptions, MultistageSpace
from epnas.spaces.nb201 import NB201Genome, NB201Options, NB201Space, parse_arch, to_arch
from epnas.spaces.registry import (
    build,
    cost,
    get,
    load_genome,
    names,
    origins,
    register,
    resolve,
    space_of,
)

register("layerwise")(LayerwiseSpace)
register("cellwise")(CellwiseSpace)
register("nb201")(NB201Space)
register("multistage")(MultistageSpace)

__all__ = [
    "SCALE_CHOICES", "Action", "ActionSpace", "Block", "Branch", "CellwiseGenome",
    "CellwiseOptions", "CellwiseSpace", "Decision", "Genome", "Insert", "Keep", "Layer",
    "LayerwiseGenome", "LayerwiseOptions", "LayerwiseSpace", "MultistageGenome",
    "MultistageOptions", "MultistageSpace", "NB201Genome", "NB201Options",
    "NB201Space", "Remove", "SamplingOptions", "Scale", "Space", "SpaceOptions", "build", "cost",
    "get", "load_genome", "names", "origins", "parse_arch", "register", "resolve", "space_of",
    "to_arch",
]
