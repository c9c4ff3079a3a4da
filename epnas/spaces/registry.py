"""The space registry: built-in and user spaces by name or ``package.module:ClassName``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from epnas.errors import GenomeError, SpaceError
from epnas.registry import Registry
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome, parse_genome_json

SPACES: Registry[Space] = Registry("space", Space, SpaceError)
register = SPACES.register
names = SPACES.names
resolve = SPACES.resolve


def get(name: str, **options: Any) -> Space:
    """Create a space by registered name or ``module:Class`` spec, with its options."""
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


def load_genome(text: str | Mapping[str, Any]) -> Genome:
    """Load and validate a genome from its JSON text (as written by ``genome.to_json()``)."""
    data = parse_genome_json(text)
    try:
        space = get(data["space"], **data.get("options", {}))
    except SpaceError as exc:
        raise GenomeError(f"space/options: {exc}") from None
    return space.genome_from_dict(data)
