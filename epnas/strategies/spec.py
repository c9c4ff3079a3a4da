"""Strategy specs: a strategy, its options and an optional filter, written as one string.

``NAME[KEY=VALUE,KEY=VALUE][+filter]``, as ``epnas search --strategy`` and
``epnas benchmark --strategies`` take them:

* ``NAME`` is a registered strategy or ``package.module:ClassName``;
* ``[KEY=VALUE,...]`` sets strategy options; commas inside the brackets separate
  options, and each value is read as YAML like a ``--strategy-opt`` value
  (``lr=0``, ``levels=[12ep,200ep]`` for a list);
* ``+filter`` applies the study's constraints as an EEEA early-exit filter
  (:func:`epnas.strategies.filters.constraint_limits`).

Examples: ``epnas``, ``epnas[lr=0]``, ``random+filter``,
``my_pkg.search:Greedy[depth=3]+filter``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from epnas.errors import EpnasError

FILTER_SUFFIX = "+filter"
_NAME = re.compile(r"[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.]*)?")
_FORM = "NAME[KEY=VALUE,...][+filter], e.g. epnas[lr=0] or random+filter"
_OPEN, _CLOSE = "[{", "]}"


@dataclass(frozen=True)
class StrategySpec:
    """A parsed spec: the plain strategy ``name``, its ``options`` and ``filter``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    filter: bool = False


def parse(text: str) -> StrategySpec:
    """Parse one spec; raises :class:`EpnasError` with one line on bad syntax."""
    spec = text.strip()
    filtered = spec.endswith(FILTER_SUFFIX)
    if filtered:
        spec = spec.removesuffix(FILTER_SUFFIX).rstrip()
    name, bracket, rest = spec.partition("[")
    name = name.strip()
    if not _NAME.fullmatch(name) or (bracket and not rest.endswith("]")):
        raise EpnasError(f"strategy spec {text!r}: expected {_FORM}")
    options: dict[str, Any] = {}
    inner = rest[:-1] if bracket else ""
    for item in _split(inner, text) if inner.strip() else []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise EpnasError(f"strategy spec {text!r}: option {item.strip()!r} is not "
                             "KEY=VALUE")
        if key in options:
            raise EpnasError(f"strategy spec {text!r}: option {key!r} is given twice")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise EpnasError(f"strategy spec {text!r}: cannot read the value of {key!r}: "
                             f"{raw.strip()!r}") from None
    return StrategySpec(name, options, filtered)


def split(text: str) -> list[str]:
    """Comma-separated specs, the commas inside brackets belonging to the options."""
    return [part.strip() for part in _split(text, text) if part.strip()]


def _split(text: str, whole: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for at, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth < 0:
                break
        elif char == "," and depth == 0:
            parts.append(text[start:at])
            start = at + 1
    if depth != 0:
        raise EpnasError(f"strategy spec {whole!r}: unbalanced brackets; expected {_FORM}")
    parts.append(text[start:])
    return parts
