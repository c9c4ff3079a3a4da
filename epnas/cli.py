"""The ``epnas`` command line.

Errors caused by input (a bad genome file, an unknown space, a bad option) print one
line ``epnas: error: ...`` and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

import epnas
from epnas.errors import EpnasError

EXIT_USAGE = 2


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


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive sizes, got {text!r}")
    return shape  # type: ignore[return-value]


def read_genome(path: str) -> epnas.Genome:
    """A genome from a file holding ``genome.to_json()`` (the first non-empty line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EpnasError(f"cannot read genome file {path}: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines):
        text = lines[0]  # a JSON-lines file from `epnas sample --json`: take the first
    try:
        return epnas.load_genome(text)
    except EpnasError as exc:
        raise EpnasError(f"{path}: {exc}") from None


def _emit_json(args: argparse.Namespace, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        Path(args.json).write_text(text)


def _cost_cells(genome: epnas.Genome, args: argparse.Namespace) -> list[str]:
    c = epnas.cost(genome, args.input_shape, args.num_classes)
    return [f"{c.params:,}", f"{c.mflops:,.2f}", f"{c.intensity:.2f}"]


def cmd_spaces(args: argparse.Namespace) -> int:
    rows = []
    for name in epnas.spaces.names():
        _, cls = epnas.spaces.resolve(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        defaults = {k: f.default for k, f in cls.Options.model_fields.items()}
        rows.append((name, doc, defaults))
    if args.json:
        _emit_json(args, [json.dumps({"name": n, "description": d, "options": o})
                          for n, d, o in rows])
        return 0
    table = Table(title="registered spaces (options: --space-opt KEY=VALUE)")
    table.add_column("space", style="bold")
    table.add_column("description")
    table.add_column("options (defaults)")
    for name, doc, defaults in rows:
        opts = "\n".join(f"{k} = {_short(v)}" for k, v in defaults.items())
        table.add_row(name, doc, opts)
    Console().print(table)
    return 0


def _short(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def cmd_sample(args: argparse.Namespace) -> int:
    space = epnas.spaces.get(args.space, **parse_options(args.space_opt, "--space-opt"))
    rng = np.random.default_rng(args.seed)
    genomes = [space.sample(rng, depth=args.depth) for _ in range(args.n)]
    if args.json:
        _emit_json(args, [g.to_json() for g in genomes])
        return 0
    table = Table(title=f"{args.n} random {space.name} genomes "
                        f"(input {','.join(map(str, args.input_shape))}, seed {args.seed})")
    for column in ("#", "key", "units", "params", "MFLOPs", "intensity"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("architecture", overflow="fold")
    for i, g in enumerate(genomes, start=1):
        table.add_row(str(i), g.key, str(space.size(g)), *_cost_cells(g, args),
                      space.describe(g))
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    genome = read_genome(args.genome)
    space = epnas.spaces.space_of(genome)
    cost = epnas.cost(genome, args.input_shape, args.num_classes)
    if args.json:
        _emit_json(args, [json.dumps({**genome.to_dict(), "key": genome.key,
                                      "cost": cost.as_dict()})])
        return 0
    console = Console()
    console.print(f"[bold]{space.name}[/] genome {genome.key}: {space.size(genome)} units")
    console.print(space.describe(genome))
    console.print(f"params {cost.params:,}  MFLOPs {cost.mflops:,.2f}  "
                  f"bytes {cost.bytes:,}  intensity {cost.intensity:.2f} FLOP/byte "
                  f"(input {','.join(map(str, args.input_shape))}, {args.num_classes} classes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epnas", description="Efficient Progressive Neural Architecture Search.")
    parser.add_argument("--version", action="version", version=f"epnas {epnas.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                       help="machine-readable output to stdout, or to FILE")

    def shape_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input-shape", type=parse_shape, default=(3, 32, 32), metavar="C,H,W",
                       help="input shape for costs (default 3,32,32)")
        p.add_argument("--num-classes", type=int, default=10, help="classes (default 10)")

    p = sub.add_parser("spaces", help="list the registered spaces and their options")
    json_flag(p)
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("sample", help="sample random genomes and show their costs")
    p.add_argument("--space", default="layerwise",
                   help="registered name or package.module:ClassName (default layerwise)")
    p.add_argument("-n", type=int, default=5, help="how many genomes (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, help="layers / branches / active edges per genome")
    p.add_argument("--space-opt", action="append", metavar="KEY=VALUE",
                   help="space option, e.g. max_layers=8 or channels=16,32")
    shape_flags(p)
    json_flag(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("show", help="show a genome file's architecture and costs")
    p.add_argument("--genome", required=True, metavar="FILE", help="genome JSON file")
    shape_flags(p)
    json_flag(p)
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except EpnasError as exc:
        if args.debug:
            raise
        print(f"epnas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
