"""Shared machinery of the spaces whose genomes are ordered units with Src1/Src2 inputs.

``layerwise`` (layers) and ``cellwise`` (branches) differ in what a unit is and how it
is built; the progressive actions (grouped scaling, splice-insert, remove with
rewiring), tokens and mutation loop are the same and live here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, replace
from typing import Any, ClassVar

import numpy as np

from epnas.errors import ActionError, GenomeError
from epnas.spaces import _units as U
from epnas.spaces.base import Space, scaled_count
from epnas.spaces.genome import (
    SCALE_CHOICES,
    Action,
    Decision,
    Genome,
    Insert,
    Keep,
    Remove,
    Scale,
    make_decision,
)


class UnitSpace(Space):
    """A space of genomes made of ordered units (layers or branches)."""

    unit_field: ClassVar[str]  # the genome attribute holding the units
    unit_class: ClassVar[type]  # the unit dataclass (fields: uid, src1, src2, ...)
    unit_word: ClassVar[str]  # "layer" / "branch", for messages
    limit_options: ClassVar[tuple[str, str]]  # names of the min and max unit-count options
    genome_class: ClassVar[type[Genome]]  # the genome dataclass

    def genome(self, units: Sequence[Any]) -> Genome:
        """Make and validate a genome of this space from its units."""
        genome = self.genome_class(space=self.name, options=self.options,
                                   **{self.unit_field: tuple(units)})
        self.validate(genome)
        return genome

    def _checked_units(self, genome: Genome) -> tuple[Any, ...]:
        """The units of ``genome`` after the checks every unit space shares."""
        self.check_member(genome)
        if not isinstance(genome, self.genome_class):
            raise GenomeError(f"genome is not a {self.genome_class.__name__}")
        units = self.units(genome)
        low, high = self.limits()
        if not low <= len(units) <= high:
            raise GenomeError(f"{self.unit_field}: {len(units)} {self.unit_field}, must be "
                              f"{low}..{high} ({self.limit_options[1]})")
        U.check_uids(self.unit_field, units)
        return units

    def limits(self) -> tuple[int, int]:
        """The (minimum, maximum) number of units."""
        low, high = self.limit_options
        return getattr(self.options, low), getattr(self.options, high)

    @abstractmethod
    def _scaled(self, unit: Any, what: str, step: int) -> Any | None:
        """``unit`` moved one table step (``what``: channels/width), None if it cannot."""

    @abstractmethod
    def _vocab(self) -> dict[str, tuple[Any, ...]]:
        """Token vocabulary per unit field, in encoding order."""

    @abstractmethod
    def _mutation(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """One random change (it may fail validation or change nothing)."""

    @abstractmethod
    def _removed(self, genome: Genome, target: int) -> Genome:
        """Remove unit ``target`` (limits already checked)."""

    @abstractmethod
    def _inserted(self, genome: Genome, action: Insert) -> Genome:
        """Insert after ``action.place`` (limits already checked)."""

    def from_structure(self, data: Mapping[str, Any]) -> Genome:
        unknown = set(data) - {self.unit_field}
        if unknown:
            raise GenomeError(f"unknown key(s) {sorted(unknown)} in a {self.name} genome")
        raw = data.get(self.unit_field)
        if not isinstance(raw, list):
            raise GenomeError(f"{self.unit_field}: must be a list of {self.unit_word} objects")
        allowed = {f.name for f in fields(self.unit_class)}
        required = {f.name for f in fields(self.unit_class) if f.default is MISSING}
        units = []
        for index, item in enumerate(raw, start=1):
            item = U.unit_fields(item, self.unit_field, index, allowed)
            missing = required - set(item)
            if missing:
                raise GenomeError(f"{self.unit_field}[{index}]: missing {sorted(missing)}")
            units.append(self.unit_class(**item))
        return self.genome(units)

    def scale_channels(self, genome: Genome, factor: float) -> Genome:
        """Scale the stem, the channel table and every unit's channels (see :class:`Space`)."""
        self.validate(genome)
        o: Any = self.options
        table = sorted({scaled_count(c, factor) for c in o.channels})
        space = type(self)(**{**dict(o), "channels": table,
                              "stem_channels": scaled_count(o.stem_channels, factor)})
        space.name = self.name
        units = [unit if unit.channels is None
                 else replace(unit, channels=scaled_count(unit.channels, factor))
                 for unit in self.units(genome)]
        return space.genome(units)

    def units(self, genome: Genome) -> tuple[Any, ...]:
        return getattr(genome, self.unit_field)

    def size(self, genome: Genome) -> int:
        return len(self.units(genome))

    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        self.validate(genome)
        return U.mutate_until_changed(genome, rng, self._mutation)

    # --- scaling -------------------------------------------------------------------

    @property
    def groups(self) -> int:
        return self.options.groups  # type: ignore[attr-defined]

    def scale_decisions(self, genome: Genome) -> tuple[Decision, ...]:
        """One decision per group; a choice is legal when it moves some unit of the group."""
        units = self.units(genome)
        decisions = []
        for group in range(self.groups):
            members = [u for i, u in enumerate(units, start=1)
                       if U.group_of(i, len(units), self.groups) == group]

            def legal(choice: str, members: list[Any] = members) -> bool:
                if choice == "keep":
                    return True
                what, step = choice[:-1], 1 if choice[-1] == "+" else -1
                return any(self._scaled(m, what, step) is not None for m in members)

            decisions.append(make_decision("scale", SCALE_CHOICES, legal))
        return tuple(decisions)

    def _apply_scale(self, genome: Genome, action: Scale) -> Genome:
        if not 0 <= action.group < self.groups or action.what not in ("channels", "width") \
                or action.step not in (-1, 1):
            raise U.illegal(f"{action}: group must be in 0..{self.groups - 1}, what "
                            "'channels' or 'width', step -1 or +1")
        units = self.units(genome)
        scaled_units, moved = [], False
        for i, unit in enumerate(units, start=1):
            scaled = None
            if U.group_of(i, len(units), self.groups) == action.group:
                scaled = self._scaled(unit, action.what, action.step)
            moved |= scaled is not None
            scaled_units.append(scaled or unit)
        if not moved:
            raise U.illegal(f"{action}: no {self.unit_word} of group {action.group} can move "
                            "that way")
        return self.genome(scaled_units)

    # --- apply ---------------------------------------------------------------------

    def apply(self, genome: Genome, action: Action) -> Genome:
        self.validate(genome)
        n = self.size(genome)
        low, high = self.limits()
        if isinstance(action, Keep):
            return genome
        if isinstance(action, Scale):
            return self._apply_scale(genome, action)
        if isinstance(action, Remove):
            if n <= low:
                raise U.illegal(f"remove: the genome already has the minimum "
                                f"{self.limit_options[0]} = {low} {self.unit_word}(s)")
            if not 1 <= action.target <= n:
                raise U.illegal(f"remove target = {action.target} must be in 1..{n}")
            return self._removed(genome, action.target)
        if isinstance(action, Insert):
            if n >= high:
                raise U.illegal(f"insert: the genome already has {self.limit_options[1]} = "
                                f"{high} {self.unit_word}s")
            if not 0 <= action.place <= n:
                raise U.illegal(f"insert place = {action.place} must be in 0..{n}")
            try:
                return self._inserted(genome, action)
            except ActionError:
                raise
            except GenomeError as exc:
                raise U.illegal(f"insert {action}: {exc}") from None
        raise U.illegal(f"{action!r} is not a {self.name} action")

    # --- tokens --------------------------------------------------------------------

    @property
    def token_fields(self) -> tuple[str, ...]:
        return tuple(self._vocab())

    @property
    def vocab_size(self) -> int:
        return sum(len(v) for v in self._vocab().values())

    def encode(self, genome: Genome) -> list[int]:
        return U.encode_units(self._vocab(), self.units(genome))

    def decode(self, tokens: list[int]) -> Genome:
        rows = U.decode_units(self._vocab(), tokens)
        return self.genome([self.unit_class(uid=i, **row) for i, row in enumerate(rows, start=1)])
