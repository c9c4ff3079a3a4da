"""The space registry: built-in and user spaces by name or ``package.module:ClassName``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from epnas.errors import GenomeError, SpaceError
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome, parse_genome_json

_REGISTRY: dict[str, type[Space]] = {}
S = TypeVar("S", bound=type[Space])


def register(name: str) -> Callable[[S], S]:
    """Class decorator registering a :class:`Space` subclass under ``name``.

    Example::

        @epnas.spaces.register("tiny")
        class Tiny(epnas.spaces.LayerwiseSpace): ...
    """

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Space)):
            raise TypeError(f"@register({name!r}) needs a Space subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"space {name!r} is already registered")
        if ":" in name:
            raise ValueError(f"space names may not contain ':' ({name!r})")
        _REGISTRY[name] = cls
        return cls

    return decorator


def names() -> list[str]:
    """Registered space names, sorted."""
    return sorted(_REGISTRY)


def resolve(spec: str) -> tuple[str, type[Space]]:
    """The canonical name and class of a registered name or a ``module:Class`` spec."""
    if spec in _REGISTRY:
        return spec, _REGISTRY[spec]
    if ":" not in spec:
        raise SpaceError(f"unknown space {spec!r}; known: {', '.join(names())} "
                         "(or give package.module:ClassName)")
    cls = load_object(spec, "space")
    if not (isinstance(cls, type) and issubclass(cls, Space)):
        raise SpaceError(f"{spec} is not a subclass of epnas.spaces.Space")
    for name, registered in _REGISTRY.items():
        if registered is cls:
            return name, cls
    return spec, cls


def load_object(spec: str, what: str) -> Any:
    """Import ``package.module:Name`` (user code named on the command line or in a file)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpaceError(f"cannot import {what} module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SpaceError(f"module {module_name!r} has no {what} {attr!r}") from None


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
