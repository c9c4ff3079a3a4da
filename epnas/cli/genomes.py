"""``epnas sample``, ``show`` and ``train``: random and single genomes."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from epnas import spaces
from epnas.cli.common import read_genome, shape_flags
from epnas.errors import EpnasError, validation_message
from epnas.flags import add_mflops_range, emit_json, json_flag, parse_options, sampling_options
from epnas.spaces import Genome
from epnas.spaces.registry import cost


def _cost_cells(genome: Genome, args: argparse.Namespace) -> list[str]:
    c = cost(genome, args.input_shape, args.num_classes)
    return [f"{c.params:,}", f"{c.mflops:,.2f}", f"{c.intensity:.2f}"]


def cmd_sample(args: argparse.Namespace) -> int:
    options = parse_options(args.space_opt, "--space-opt")
    # The range applies at the shape the table shows.
    options.update(sampling_options(args, args.input_shape, args.num_classes))
    space = spaces.get(args.space, **options)
    rng = np.random.default_rng(args.seed)
    genomes = [space.sample(rng, depth=args.depth) for _ in range(args.n)]
    if args.json:
        emit_json(args, [g.to_json() for g in genomes])
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
    space = spaces.space_of(genome)
    c = cost(genome, args.input_shape, args.num_classes)
    if args.json:
        emit_json(args, [json.dumps({**genome.to_dict(), "key": genome.key,
                                     "cost": c.as_dict()})])
        return 0
    console = Console()
    console.print(f"[bold]{space.name}[/] genome {genome.key}: {space.size(genome)} units")
    console.print(space.describe(genome))
    console.print(f"params {c.params:,}  MFLOPs {c.mflops:,.2f}  "
                  f"bytes {c.bytes:,}  intensity {c.intensity:.2f} FLOP/byte "
                  f"(input {','.join(map(str, args.input_shape))}, {args.num_classes} classes)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    # torch training code loads only for this command
    from epnas.data import load
    from epnas.evaluators.training import train_genome
    from epnas.train import schedules

    genome = read_genome(args.genome)
    data = load(args.dataset, args.data)
    overrides = parse_options(args.schedule_opt, "--schedule-opt")
    if args.epochs is not None:  # train exactly N epochs; the LR curve spans them
        overrides.update(epochs=args.epochs, stop_epoch=None)
    try:
        schedule = schedules.get(args.schedule, dataset=data, **overrides)
    except ValueError as exc:
        raise EpnasError(validation_message("schedule", exc)) from None
    c = cost(genome, data.input_shape, data.num_classes)
    console = Console(stderr=bool(args.json == "-"))
    console.print(f"training {spaces.space_of(genome).describe(genome)} "
                  f"({c.params:,} params, {c.mflops:,.2f} MFLOPs) on {data.name} "
                  f"with the {args.schedule} schedule ({schedule.train_epochs} epochs)")

    def progress(epoch: int, record: dict[str, float]) -> None:
        line = f"epoch {epoch}/{schedule.train_epochs}  loss {record['loss']:.4f}  " \
               f"train {100 * record['train_accuracy']:.2f}%"
        if "accuracy" in record:
            line += f"  val {100 * record['accuracy']:.2f}%"
        speed = record["images_per_second"]
        console.print(f"{line}  {record['seconds']:.1f}s  {speed:,.0f} img/s")

    run = train_genome(genome, data, schedule, seed=args.seed, device=args.device,
                       evaluate_test=True, progress=progress)
    result = {"status": run.status, "validation_accuracy": run.accuracy,
              "test_accuracy": run.test_accuracy, "epochs": run.epochs,
              "train_seconds": run.train_seconds, "images_per_second": run.images_per_second,
              **c.as_dict(schedule.batch_size)}
    if args.json:
        emit_json(args, [json.dumps(result)])
    if args.json != "-":
        test = "n/a" if run.test_accuracy is None else f"{100 * run.test_accuracy:.2f}%"
        console.print(f"{run.status}: validation {100 * run.accuracy:.2f}%  test {test}  "
                      f"{run.epochs} epochs in {run.train_seconds:.1f}s "
                      f"({run.images_per_second:,.0f} img/s)")
    return 0 if run.status == "done" else 1


def add_commands(sub: Any) -> None:
    """The ``sample``, ``show`` and ``train`` subcommands."""
    p = sub.add_parser("sample", help="sample random genomes and show their costs")
    p.add_argument("--space", default="layerwise",
                   help="registered name or package.module:ClassName (default layerwise)")
    p.add_argument("-n", type=int, default=5, help="how many genomes (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, help="layers / branches / active edges per genome")
    add_mflops_range(p, "--input-shape")
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

    p = sub.add_parser("train", help="train one architecture and report its accuracy")
    p.add_argument("--genome", required=True, metavar="FILE", help="genome JSON file")
    p.add_argument("--dataset", default="digits", help="data set (default digits)")
    p.add_argument("--data", metavar="PATH", help="where the data set's files are")
    p.add_argument("--schedule", default="full", choices=("full", "prediction"))
    p.add_argument("--epochs", type=int, help="train exactly N epochs")
    p.add_argument("--schedule-opt", action="append", metavar="KEY=VALUE",
                   help="schedule field, e.g. lr=0.05 or cutout=0 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    json_flag(p)
    p.set_defaults(func=cmd_train)
