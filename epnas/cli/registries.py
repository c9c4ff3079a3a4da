"""``epnas spaces``, ``strategies`` and ``evaluators``: every registered name (built-in,
published by an installed package's entry point, or registered from Python), where it
comes from, and its options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from epnas.errors import EpnasError
from epnas.evaluators import EVALUATORS
from epnas.flags import emit_json, json_flag
from epnas.registry import Registry
from epnas.spaces import SamplingOptions
from epnas.spaces.registry import SPACES
from epnas.strategies import STRATEGIES


def _rows(registry: Registry[Any],
          details: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per name: name, origin, description and ``details(cls)``; a plug-in that
    cannot be loaded is listed with the reason instead of failing the command."""
    rows = []
    for name, origin in registry.origins().items():
        row: dict[str, Any] = {"name": name, "origin": origin}
        try:
            _, cls = registry.resolve(name)
        except EpnasError as exc:
            rows.append({**row, "description": f"cannot be loaded: {exc}"})
            continue
        rows.append({**row, "description": (cls.__doc__ or "").strip().split("\n")[0],
                     **details(cls)})
    return rows


def _defaults(*models: type[BaseModel]) -> dict[str, Any]:
    return {k: f.default for model in models for k, f in model.model_fields.items()}


def _short(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _list(args: argparse.Namespace, registry: Registry[Any], title: str,
          details: Callable[[Any], dict[str, Any]], columns: tuple[str, ...]) -> int:
    rows = _rows(registry, details)
    if args.json:
        emit_json(args, [json.dumps(row) for row in rows])
        return 0
    table = Table(title=title)
    for column in ("name", "origin", "description", *columns):
        table.add_column(column, style="bold" if column == "name" else None)
    for row in rows:
        cells = []
        for key in columns:
            value = row.get(key, "")
            if isinstance(value, dict):
                value = "\n".join(f"{k} = {_short(v)}" for k, v in value.items())
            cells.append(_short(value) or ("every space" if key == "spaces" else ""))
        table.add_row(row["name"], row["origin"], row["description"], *cells)
    Console().print(table)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    return _list(args, SPACES, "spaces (options: --space-opt KEY=VALUE)",
                 lambda cls: {"options": _defaults(cls.Options, SamplingOptions)}, ("options",))


def cmd_strategies(args: argparse.Namespace) -> int:
    return _list(args, STRATEGIES, "strategies (options: --strategy-opt KEY=VALUE)",
                 lambda cls: {"spaces": list(cls.supported_spaces or ()),
                              "presets": list(cls.presets), "options": _defaults(cls.Options)},
                 ("spaces", "presets", "options"))


def cmd_evaluators(args: argparse.Namespace) -> int:
    return _list(args, EVALUATORS, "evaluators (options: --evaluator-opt KEY=VALUE)",
                 lambda cls: {"fidelities": list(cls.fidelities)}, ("fidelities",))


def add_commands(sub: Any) -> None:
    """The ``spaces``, ``strategies`` and ``evaluators`` subcommands."""
    for name, func, what in (("spaces", cmd_spaces, "options"),
                             ("strategies", cmd_strategies, "spaces, presets and options"),
                             ("evaluators", cmd_evaluators, "fidelities")):
        p = sub.add_parser(name, help=f"list the {name}: name, origin (built-in, entry point "
                                      f"of a package, module:Class) and {what}")
        json_flag(p)
        p.set_defaults(func=func)
