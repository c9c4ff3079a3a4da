"""Command-line pieces shared by every module that registers an ``epnas`` command.

The CLI package (:mod:`epnas.cli`) and the modules that bring their own command
(``benchmark``, ``retrain``, ``proxy-study``, ``report``, ``export``, ``predict``) take
these from here, below all of them, so that no module imports the CLI back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from epnas.config import StudyConfig
from epnas.errors import EpnasError
from epnas.objective import Objective


def json_flag(p: argparse.ArgumentParser) -> None:
    """``--json [FILE]``: machine-readable output to stdout, or to FILE."""
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="machine-readable output to stdout, or to FILE")


def emit_json(args: argparse.Namespace, lines: list[str]) -> None:
    """Write JSON ``lines`` where ``--json`` says: stdout for ``-``, else the file."""
    text = "\n".join(lines) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        Path(args.json).write_text(text)


def parse_options(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; ``a,b,c`` gives a list, scalars are YAML-typed."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise EpnasError(f"{flag} {pair!r}: expected KEY=VALUE")
        items = [yaml.safe_load(v) for v in raw.split(",")] if "," in raw else None
        options[key.replace("-", "_")] = items if items is not None else yaml.safe_load(raw)
    return options


def constraint_flags(p: argparse.ArgumentParser) -> None:
    """``--constraint`` and its shorthands (``epnas search`` and ``epnas benchmark``)."""
    p.add_argument("--constraint", action="append", metavar="METRIC:LOW:HIGH[:PENALTY]",
                   help="soft constraint, e.g. params::100k or flops:1M:20M:0.8 (repeatable)")
    p.add_argument("--max-params", help="shorthand for --constraint params::VALUE (100k)")
    p.add_argument("--max-mflops", help="shorthand for --constraint flops::VALUE*1e6")
    p.add_argument("--min-intensity", help="shorthand for --constraint intensity:VALUE:")
    p.add_argument("--max-memory", help="shorthand for --constraint memory::VALUE (2GB)")


def constraint_objective(args: argparse.Namespace) -> Objective:
    """The objective of the :func:`constraint_flags`, built as a study builds its own."""
    settings = {k: getattr(args, k) for k in ("max_params", "max_mflops", "min_intensity",
                                              "max_memory") if getattr(args, k) is not None}
    return StudyConfig.parse({**settings, "constraints": args.constraint or []}).objective()


def add_mflops_range(p: argparse.ArgumentParser, where: str) -> None:
    """``--min-mflops`` / ``--max-mflops``: the FLOPs range of sampled genomes."""
    p.add_argument("--max-mflops", type=float, metavar="X",
                   help=f"only genomes of at most X MFLOPs at {where} (redrawn until they fit)")
    p.add_argument("--min-mflops", type=float, metavar="X",
                   help="only genomes of at least X MFLOPs (leaves out networks that are "
                        "little more than stem and head)")


def sampling_options(args: argparse.Namespace, input_shape: tuple[int, int, int],
                     num_classes: int) -> dict[str, Any]:
    """The space's sampling options for ``--min/--max-mflops``, measured at ``input_shape``."""
    bounds = {"sample_min_mflops": args.min_mflops, "sample_max_mflops": args.max_mflops}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    if not bounds:
        return {}
    return {**bounds, "sample_input_shape": input_shape, "sample_num_classes": num_classes}
