"""``epnas supernet train`` and ``epnas supernet resume``: a once-for-all supernet of the
``multistage`` space, trained by progressive shrinking (:mod:`epnas.supernet`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from epnas.errors import EpnasError
from epnas.flags import emit_json, json_flag, parse_options
from epnas.supernet.training import REPORT_FILE, SupernetTraining, read_meta


def _train(args: argparse.Namespace) -> int:
    if args.space != "multistage":
        raise EpnasError(f"a supernet is trained for the multistage space only, not "
                         f"{args.space!r}")
    options = parse_options(args.opt, "--opt")
    if args.epochs_per_phase is not None:
        options["epochs_per_phase"] = args.epochs_per_phase
    training = SupernetTraining(args.out, args.dataset, args.data,
                                parse_options(args.space_opt, "--space-opt"), options,
                                device=args.device)
    return _run(args, training)


def _resume(args: argparse.Namespace) -> int:
    meta = read_meta(args.dir)
    training = SupernetTraining(args.dir, meta["dataset"], meta["data"], meta["space_options"],
                                meta["options"], device=args.device)
    return _run(args, training)


def _run(args: argparse.Namespace, training: SupernetTraining) -> int:
    console = Console(stderr=bool(args.json == "-"))
    total, done = training.total_epochs(), training.done_epochs()
    if training.finished:
        console.print(f"{training.out}: the supernet has finished training")
    else:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=console, disable=args.plain) as bar:
            task = bar.add_task("supernet", total=total, completed=done, status="")

            def progress(record: dict[str, Any]) -> None:
                line = (f"{record['phase']} {record['epoch']}/{record['epochs']} "
                        f"loss {record['loss']:.4f} ({record['seconds']:.1f} s)")
                bar.update(task, advance=1, status=line)
                if args.plain:
                    console.print(line)

            training.run(progress)
    report = training.report()
    if args.json:
        emit_json(args, [json.dumps({"out": str(training.out), "phases": report})])
        return 0
    table = Table(title=f"supernet {training.out} (validation accuracy per exit, %)")
    for column in ("phase", "epochs", "loss", "largest", "smallest"):
        table.add_column(column)
    for row in report:
        table.add_row(row["phase"], str(row["epochs"]), f"{row['loss']:.4f}",
                      *(" ".join(f"{100 * a:.1f}" for a in row[k]) for k in ("largest",
                                                                            "smallest")))
    console.print(table)
    console.print(f"report: {training.out / REPORT_FILE}")
    return 0


def _epochs(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected 4 comma-separated epochs (largest, kernel, "
                                         f"depth, expand), got {text!r}")
    return values


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``epnas supernet train`` and ``epnas supernet resume``."""
    group = sub.add_parser("supernet", help="train a once-for-all supernet (multistage space)")
    commands = group.add_subparsers(dest="supernet_command", metavar="COMMAND", required=True)
    p = commands.add_parser("train", help="train a supernet by progressive shrinking")
    p.add_argument("--space", default="multistage", help="the space (multistage only)")
    p.add_argument("--space-opt", action="append", metavar="KEY=VALUE",
                   help="space option (repeatable), e.g. widths=16,24,40,64")
    p.add_argument("--dataset", default="digits", help="data set name (default digits)")
    p.add_argument("--data", help="where the data set's files are")
    p.add_argument("--out", required=True, help="the supernet directory (resumable)")
    p.add_argument("--epochs-per-phase", type=_epochs, metavar="L,K,D,E",
                   help="epochs of the largest, kernel, depth and expand phases (4,2,2,2)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="training option (repeatable): batch_size, lr, shrink_lr, subnets, "
                        "distill, temperature, seed, ...")
    for q in (p, r := commands.add_parser("resume", help="continue a supernet's training")):
        q.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
        q.add_argument("--plain", action="store_true", help="a line per epoch, no live bar")
        json_flag(q)
    r.add_argument("dir", help="the supernet directory")
    p.set_defaults(func=_train)
    r.set_defaults(func=_resume)
