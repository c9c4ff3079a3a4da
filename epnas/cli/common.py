"""What the command modules of :mod:`epnas.cli` share: exit codes, error handling, the
genome and shape arguments. Helpers that modules outside the CLI also need (``--json``
output, ``KEY=VALUE`` options, the constraint flags) are in :mod:`epnas.flags`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from epnas.errors import EpnasError
from epnas.spaces import Genome, load_genome

EXIT_USAGE = 2  # bad input: one line on stderr, no traceback unless --debug


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; an :class:`EpnasError` becomes one line and exit 2."""
    try:
        return args.func(args)
    except EpnasError as exc:
        if args.debug:
            raise
        print(f"epnas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def parse_shape(text: str) -> tuple[int, int, int]:
    """``C,H,W`` to a shape (an argparse ``type``)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive sizes, got {text!r}")
    return shape  # type: ignore[return-value]


def shape_flags(p: argparse.ArgumentParser) -> None:
    """``--input-shape`` and ``--num-classes``: what costs are measured at."""
    p.add_argument("--input-shape", type=parse_shape, default=(3, 32, 32), metavar="C,H,W",
                   help="input shape for costs (default 3,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (default 10)")


def read_genome(path: str) -> Genome:
    """A genome from a file holding ``genome.to_json()`` (the first non-empty line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EpnasError(f"cannot read genome file {path}: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines):
        text = lines[0]  # a JSON-lines file from `epnas sample --json`: take the first
    try:
        return load_genome(text)
    except EpnasError as exc:
        raise EpnasError(f"{path}: {exc}") from None
