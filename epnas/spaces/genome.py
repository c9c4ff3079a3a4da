"""Genomes (architectures as immutable plain data), actions and action spaces.

A genome is a frozen dataclass that names its space and carries the space options
that define its validity, so it can be validated, built and costed on its own and
round-trips through JSON exactly. Nothing here is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from epnas.errors import GenomeError

FORMAT_VERSION = 1


class SpaceOptions(BaseModel):
    """Base of every space's options: frozen (hashable) and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, kw_only=True)
class Genome:
    """One architecture. Subclasses add their structure fields (tuples of frozen units).

    Attributes:
        space: the name the space is registered under (or its ``module:Class`` spec).
        options: the space options the genome was made under.
    """

    space: str
    options: SpaceOptions

    def structure(self) -> dict[str, Any]:
        """The architecture as JSON-ready plain data (without space and options)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "space": self.space,
            "options": self.options.model_dump(mode="json"),
            **self.structure(),
        }

    def to_json(self) -> str:
        """Compact, canonical JSON (one line), loadable by :func:`epnas.load_genome`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @cached_property
    def key(self) -> str:
        """Canonical hash of the exact architecture.

        Layer/branch ``uid`` values are bookkeeping for weight sharing and do not
        change the network, so they are left out.
        """
        data = _without_uids(self.to_dict())
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_uids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uids(v) for k, v in value.items() if k != "uid"}
    if isinstance(value, list):
        return [_without_uids(v) for v in value]
    return value


def parse_genome_json(text: str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse genome JSON text (or an already parsed mapping) and check its envelope."""
    if isinstance(text, Mapping):
        data = dict(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome JSON is malformed: {exc}") from None
    if not isinstance(data, dict):
        raise GenomeError("genome JSON must be an object with 'space', 'format' and its units")
    fmt = data.get("format")
    if fmt != FORMAT_VERSION:
        raise GenomeError(
            f"format: genome format {fmt!r} is not supported (this epnas reads {FORMAT_VERSION})"
        )
    if not isinstance(data.get("space"), str):
        raise GenomeError("space: the genome JSON must name its space")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise GenomeError("options: must be an object of space options")
    return data


# --- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Move the filter width or the channel count of every unit of a group one table step."""

    group: int
    what: str  # "channels" or "width"
    step: int  # -1 or +1


@dataclass(frozen=True)
class Insert:
    """Insert a layer/branch (or, in nb201, set an edge's op).

    ``place`` is the new unit's input (Src1): the unit is inserted right after it and
    takes over its main-path consumers. Parameters a given op does not use stay None.
    """

    op: str
    place: int
    src2: int = -1
    width: int | None = None
    pool: int | None = None
    channels: int | None = None
    act: str | None = None
    propagate: int | None = None


@dataclass(frozen=True)
class Remove:
    """Delete a layer/branch (its consumers are rewired to its input) or clear an edge."""

    target: int


@dataclass(frozen=True)
class Keep:
    """Change nothing."""


Action = Scale | Insert | Remove | Keep

SCALE_CHOICES = ("keep", "channels-", "channels+", "width-", "width+")


def scale_action(group: int, choice: str) -> Action:
    """The action for one of :data:`SCALE_CHOICES` on ``group``."""
    if choice == "keep":
        return Keep()
    what, sign = choice[:-1], choice[-1]
    return Scale(group, what, 1 if sign == "+" else -1)


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a policy: a fixed vocabulary with a legality mask.

    Attributes:
        name: what is decided ("kind", "op", "place", "src2", "width", ...).
        choices: the fixed vocabulary of this decision in this space (same for every
            genome, so a policy can size its output layer once).
        mask: which choices are legal now.
        prior: the space's prior over choices (the check table for insert places);
            None means uniform over the legal choices.
    """

    name: str
    choices: tuple[Any, ...]
    mask: tuple[bool, ...]
    prior: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.mask) != len(self.choices) or not any(self.mask):
            raise ValueError(f"decision {self.name!r} needs one mask entry per choice, one legal")

    @property
    def legal(self) -> tuple[Any, ...]:
        return tuple(c for c, ok in zip(self.choices, self.mask) if ok)

    def probs(self) -> np.ndarray:
        """The prior restricted to legal choices, normalised."""
        weights = np.asarray(self.prior if self.prior is not None else [1.0] * len(self.mask))
        weights = weights * np.asarray(self.mask, dtype=float)
        if weights.sum() <= 0:  # a prior that puts no weight on a legal choice
            weights = np.asarray(self.mask, dtype=float)
        return weights / weights.sum()

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.choice(len(self.choices), p=self.probs()))]


def make_decision(
    name: str,
    choices: Sequence[Any],
    legal: Callable[[Any], bool],
    prior: Sequence[float] | None = None,
) -> Decision:
    return Decision(
        name, tuple(choices), tuple(bool(legal(c)) for c in choices),
        tuple(prior) if prior is not None else None,
    )


@dataclass(frozen=True)
class ActionSpace:
    """The legal progressive decisions for one genome.

    An EPNAS step is ``len(scale)`` scale decisions (one per layer group, choices
    :data:`SCALE_CHOICES`) followed by one insert/remove/keep decision made of a
    sequence of categorical sub-decisions: call :meth:`next_decision` with the
    choices made so far until it returns None, then :meth:`action`.
    """

    scale: tuple[Decision, ...]
    next_decision: Callable[[Mapping[str, Any]], Decision | None] = field(repr=False)
    make_action: Callable[[Mapping[str, Any]], Action] = field(repr=False)

    def action(self, chosen: Mapping[str, Any]) -> Action:
        """The insert/remove/keep action for a complete set of sub-decisions."""
        return self.make_action(chosen)

    def scale_actions(self, choices: Sequence[str]) -> list[Action]:
        """The scale actions for one choice per group (from :data:`SCALE_CHOICES`)."""
        return [scale_action(g, c) for g, c in enumerate(choices)]

    def sample_insert(self, rng: np.random.Generator) -> Action:
        """Sample the insert/remove/keep action under the masks and priors."""
        chosen: dict[str, Any] = {}
        while (decision := self.next_decision(chosen)) is not None:
            chosen[decision.name] = decision.sample(rng)
        return self.action(chosen)

    def sample_step(self, rng: np.random.Generator) -> list[Action]:
        """A whole random EPNAS step: one scale choice per group, then one insert decision."""
        steps = self.scale_actions([d.sample(rng) for d in self.scale])
        return [*steps, self.sample_insert(rng)]
