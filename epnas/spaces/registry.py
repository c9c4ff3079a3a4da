"""The space registry: built-in spaces, entry points (group ``epnas.spaces``) and user
spaces by ``package.module:ClassName``; and the genome-level entry points that ask a
genome's own space: :func:`space_of`, :func:`cost`, :func:`build`, :func:`load_genome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from epnas.costmodel import Cost, check_input_shape
from epnas.errors import GenomeError, SpaceError
from epnas.registry import Registry
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome, parse_genome_json

if TYPE_CHECKING:
    from torch import nn

SPACES: Registry[Space] = Registry("space", Space, SpaceError, group="epnas.spaces")
register = SPACES.register
names = SPACES.names
resolve = SPACES.resolve
origins = SPACES.origins


def get(name: str, **options: Any) -> Space:
    """Create a space by registered name, entry point or ``module:Class`` spec, with its
    options."""
    canonical, cls = resolve(name)
    space = cls(**options)
    space.name = canonical
    return space


def space_of(genome: Genome) -> Space:
    """The space (with the genome's own options) that ``genome`` belongs to."""
    return _cached_space(genome.space, genome.options)


@lru_cache(maxsize=256)
def _cached_space(name: str, options: Any) -> Space:
    return get(name, **dict(options))


def cost(genome: Genome, input_shape: tuple[int, int, int] = (3, 32, 32),
         num_classes: int = 10) -> Cost:
    """Analytic :class:`~epnas.costmodel.Cost` of ``genome`` for inputs of ``input_shape``
    (C, H, W), from its space's ``cost``."""
    return space_of(genome).cost(genome, check_input_shape(input_shape), num_classes)


def build(genome: Genome, input_shape: tuple[int, int, int] = (3, 32, 32),
          num_classes: int = 10) -> nn.Module:
    """The PyTorch network of ``genome`` for inputs ``input_shape`` = (C, H, W), from its
    space's ``build``."""
    return space_of(genome).build(genome, check_input_shape(input_shape), num_classes)


def load_genome(text: str | Mapping[str, Any]) -> Genome:
    """Load and validate a genome from its JSON text (as written by ``genome.to_json()``)."""
    data = parse_genome_json(text)
    try:
        space = get(data["space"], **data.get("options", {}))
    except SpaceError as exc:
        raise GenomeError(f"space/options: {exc}") from None
    return space.genome_from_dict(data)
