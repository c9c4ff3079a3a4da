"""``epnas report RUN_DIR [--compare RUN_DIR ...] [--out DIR]``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``report`` subcommand."""
    p = sub.add_parser("report", help="write an HTML report with plots of a run",
                       description="Write RUN_DIR/report/report.html (self-contained: it "
                                   "opens offline) and its plots as PNG files. Works on "
                                   "finished, stopped and running runs.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to report on")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                   help="other runs to draw next to it (e.g. other strategies)")
    p.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/report)")
    p.add_argument("--top", type=int, default=3, metavar="N",
                   help="how many of the best architectures to draw (default 3)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from epnas.report import write_report  # matplotlib loads only for this command

    path = write_report(args.run_dir, args.compare, args.out, args.top)
    print(f"report: {path}")
    return 0
