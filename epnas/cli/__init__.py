"""The ``epnas`` command line.

Errors caused by input (a bad genome file, an unknown space, a bad option) print one
line ``epnas: error: ...`` and exit with status 2; ``--debug`` shows the traceback.

This module only assembles the parser: each command group is a module of this package
(:mod:`~epnas.cli.registries`, :mod:`~epnas.cli.genomes`, :mod:`~epnas.cli.search`,
:mod:`~epnas.cli.supernet`) or
registers itself from the module it serves (retrain, report, export, predict, benchmark,
proxy-study); they share :mod:`epnas.cli.common` and :mod:`epnas.flags` and never import
this module or each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from epnas import proxy_study, retrain
from epnas._version import __version__
from epnas.benchmark import add_benchmark_command
from epnas.cli import genomes, registries, search, supernet
from epnas.cli.common import EXIT_USAGE, run_command
from epnas.flags import json_flag
from epnas.report import command as report_command
from epnas.report import export, predict


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``epnas`` command."""
    parser = argparse.ArgumentParser(
        prog="epnas", description="Efficient Progressive Neural Architecture Search.")
    parser.add_argument("--version", action="version", version=f"epnas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registries.add_commands(sub)
    genomes.add_commands(sub)
    search.add_commands(sub)
    supernet.add_commands(sub)
    retrain.add_command(sub, json_flag)
    report_command.add_parser(sub)
    export.add_command(sub, json_flag)
    predict.add_command(sub, json_flag)
    add_benchmark_command(sub, json_flag)
    proxy_study.add_command(sub, json_flag)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``epnas`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return run_command(args)

