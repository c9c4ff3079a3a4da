"""Helpers shared by the spaces whose genomes are lists of units with Src1/Src2 inputs.

Unit ``i`` (1-based) is ``units[i - 1]``; index 0 is the stem (layerwise) or the cell
input (cellwise). Inserting and removing renumber every reference so the graph keeps
its meaning; uids stay with their units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import field_validator

from epnas.errors import ActionError, GenomeError
from epnas.spaces.genome import Decision, make_decision


class Unit(Protocol):
    uid: int
    src1: int
    src2: int


U = TypeVar("U", bound=Unit)


def splice_insert(units: Sequence[U], place: int, new: U) -> tuple[U, ...]:
    """Insert ``new`` right after unit ``place``; it takes over ``place``'s Src1 consumers.

    Skip references (Src2) to ``place`` keep pointing at the old unit.
    """
    out = []
    for unit in units:
        src1 = unit.src1 + 1 if unit.src1 >= place else unit.src1
        src2 = unit.src2 + 1 if unit.src2 > place else unit.src2
        out.append(replace(unit, src1=src1, src2=src2))
    out.insert(place, new)  # units before `place` only reference indices below it
    return tuple(out)


def remove_unit(units: Sequence[U], target: int) -> tuple[U, ...]:
    """Delete unit ``target``; whatever read it now reads the removed unit's Src1."""
    feed = units[target - 1].src1
    out = []
    for index, unit in enumerate(units, start=1):
        if index == target:
            continue

        def remap(ref: int) -> int:
            if ref == target:
                return feed
            return ref - 1 if ref > target else ref

        out.append(replace(unit, src1=remap(unit.src1), src2=remap(unit.src2)))
    return tuple(out)


def live_units(units: Sequence[Unit], outputs: Sequence[int]) -> set[int]:
    """Indices (1-based) of the units that reach one of ``outputs`` through Src1/Src2."""
    live: set[int] = set()
    stack = [i for i in outputs if i > 0]
    while stack:
        index = stack.pop()
        if index in live:
            continue
        live.add(index)
        unit = units[index - 1]
        stack.extend(ref for ref in (unit.src1, unit.src2) if ref > 0)
    return live


def next_uid(units: Sequence[Unit]) -> int:
    return max((u.uid for u in units), default=0) + 1


def group_of(index: int, count: int, groups: int) -> int:
    """The scale group of unit ``index`` (1-based) among ``count`` units: contiguous blocks."""
    return (index - 1) * groups // count


def step_in_table(table: Sequence[Any], value: Any, step: int) -> Any:
    """The neighbour of ``value`` in an ordered table, or None at the edge."""
    position = table.index(value) + step
    return table[position] if 0 <= position < len(table) else None


def place_prior(places: Sequence[int], count: int, kind: str) -> list[float]:
    """The check-table prior over insert places for a genome with ``count`` units.

    ``uniform`` weighs every legal place alike; ``deep`` favours places near the
    output (weight ``place + 1``), which grows networks where features are richest.
    """
    if kind == "uniform":
        return [1.0 if p <= count else 0.0 for p in places]
    return [float(p + 1) if p <= count else 0.0 for p in places]


def check_ref(field: str, value: Any, low: int, high: int, allow_none: bool = False) -> None:
    """Check a Src reference is an int in ``low..high`` (or -1 when ``allow_none``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise GenomeError(f"{field} = {value!r} must be an integer")
    if allow_none and value == -1:
        return
    if not low <= value <= high:
        extra = " or -1" if allow_none else ""
        cycle = " (a unit may only read earlier units; a later one would make a cycle)"
        raise GenomeError(
            f"{field} = {value} must be in {low}..{high}{extra}"
            + (cycle if value > high else "")
        )


def check_choice(field: str, value: Any, table: Sequence[Any]) -> None:
    # compare types too: JSON's 3.0 or true must not pass for the table's 3 or 1
    for item in table:  # a plain loop: strategies validate thousands of genomes a second
        if value == item and type(value) is type(item):
            return
    raise GenomeError(f"{field} = {value!r} is not one of {list(table)}")


def plain(unit: Any) -> dict[str, Any]:
    """A unit dataclass of plain fields as a dict (``asdict`` without its deep copies)."""
    return {f.name: getattr(unit, f.name) for f in fields(unit)}


def check_unused(field: str, value: Any, why: str) -> None:
    if value is not None:
        raise GenomeError(f"{field} = {value!r} must be null ({why})")


def check_uids(field: str, units: Sequence[Unit]) -> None:
    uids = [u.uid for u in units]
    for index, uid in enumerate(uids, start=1):
        if not isinstance(uid, int) or isinstance(uid, bool) or uid < 1:
            raise GenomeError(f"{field}[{index}].uid = {uid!r} must be a positive integer")
    if len(set(uids)) != len(uids):
        raise GenomeError(f"{field}: uids must be unique, got {uids}")


def unit_fields(raw: Any, field: str, index: int, allowed: set[str]) -> dict[str, Any]:
    """Check one unit's JSON object has only known keys."""
    if not isinstance(raw, dict):
        raise GenomeError(f"{field}[{index}] must be an object")
    unknown = set(raw) - allowed
    if unknown:
        raise GenomeError(f"{field}[{index}]: unknown key(s) {sorted(unknown)}; "
                          f"allowed: {sorted(allowed)}")
    return raw


KINDS = ("insert", "remove", "keep")


def kind_decision(can_insert: bool, can_remove: bool) -> Decision:
    return make_decision(
        "kind", KINDS,
        {"insert": can_insert, "remove": can_remove, "keep": True}.__getitem__,
    )


def illegal(reason: str) -> ActionError:
    return ActionError(f"illegal action: {reason}")


def pick(rng: np.random.Generator, table: Sequence[Any]) -> Any:
    return table[int(rng.integers(len(table)))]


def ordered_table(name: str, values: tuple, *, positive: bool = True) -> tuple:
    """Validate a numeric table: non-empty, unique, ascending (scale steps walk it)."""
    if not values:
        raise ValueError(f"{name} must not be empty")
    if list(values) != sorted(set(values)):
        raise ValueError(f"{name} must be unique and ascending, got {list(values)}")
    if positive and values[0] < 1:
        raise ValueError(f"{name} must hold positive integers")
    return values


def table_validator(*names: str) -> Any:
    """A pydantic validator checking that each named field is an ordered numeric table."""

    def check(cls: type, value: tuple, info: Any) -> tuple:
        return ordered_table(info.field_name, value)

    return field_validator(*names)(check)


def odd_validator(*names: str) -> Any:
    """A pydantic validator checking that each named field holds odd filter widths."""

    def check(cls: type, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w % 2 == 0 for w in value):
            raise ValueError("filter widths must be odd so convolutions keep H x W")
        return value

    return field_validator(*names)(check)


def _offsets(vocab: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    offsets, total = {}, 0
    for name, table in vocab.items():
        offsets[name] = total
        total += len(table)
    return offsets


def encode_units(vocab: dict[str, tuple[Any, ...]], units: Sequence[Any]) -> list[int]:
    """One token per field per unit; each field has its own id range."""
    offsets = _offsets(vocab)
    return [offsets[name] + table.index(getattr(unit, name))
            for unit in units for name, table in vocab.items()]


def decode_units(vocab: dict[str, tuple[Any, ...]], tokens: Sequence[int]) -> list[dict]:
    """Invert :func:`encode_units` into one field dict per unit."""
    offsets = _offsets(vocab)
    width = len(vocab)
    if len(tokens) % width:
        raise GenomeError(f"tokens: {len(tokens)} tokens is not a multiple of {width} per unit")
    rows = []
    for start in range(0, len(tokens), width):
        row = {}
        for (name, table), token in zip(vocab.items(), tokens[start:start + width]):
            index = int(token) - offsets[name]
            if not 0 <= index < len(table):
                raise GenomeError(f"tokens[{start // width}].{name}: token {token} is out of "
                                  f"range {offsets[name]}..{offsets[name] + len(table) - 1}")
            row[name] = table[index]
        rows.append(row)
    return rows


def mutate_until_changed(genome: Any, rng: np.random.Generator, mutation: Any) -> Any:
    """Apply random ``mutation(genome, rng)`` until the result is valid and differs."""
    for _ in range(200):
        try:
            child = mutation(genome, rng)
        except GenomeError:
            continue
        if child.key != genome.key:
            return child
    raise GenomeError("no mutation changes this genome (are the tables single-valued?)")


def action_from(chosen: dict[str, Any]) -> Any:
    """The action for a complete set of insert/remove/keep sub-decisions."""
    from epnas.spaces.genome import Insert, Keep, Remove

    kind = chosen["kind"]
    if kind == "keep":
        return Keep()
    if kind == "remove":
        return Remove(chosen["target"])
    fields = {k: v for k, v in chosen.items() if k not in ("kind", "target")}
    return Insert(**fields)
