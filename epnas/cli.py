"""The ``epnas`` command line.

Errors caused by input (a bad genome file, an unknown space, a bad option) print one
line ``epnas: error: ...`` and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

import epnas
from epnas import proxy_study, retrain
from epnas.benchmark import add_benchmark_command
from epnas.config import StudyConfig, merge, read_config_file
from epnas.errors import EpnasError, validation_message
from epnas.evaluators import EVALUATORS
from epnas.objective import Objective
from epnas.progress import LineReporter, LiveReporter, duration, metrics_text
from epnas.report import command as report_command
from epnas.report import export, predict
from epnas.store import Store, holder_pid
from epnas.strategies import spec as strategy_spec
from epnas.strategies.filters import constraint_limits
from epnas.study import Study, StudyFailed, Summary, strategy_options, summarize

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
        fields = {**cls.Options.model_fields, **epnas.spaces.SamplingOptions.model_fields}
        defaults = {k: f.default for k, f in fields.items()}
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


def cmd_sample(args: argparse.Namespace) -> int:
    options = parse_options(args.space_opt, "--space-opt")
    # The range applies at the shape the table shows.
    options.update(sampling_options(args, args.input_shape, args.num_classes))
    space = epnas.spaces.get(args.space, **options)
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


# --- search, resume, status ------------------------------------------------------------

EXIT_FAILED = 1  # the search ran but stopped: too many failures in a row
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (a preempted cluster job)

# flag -> StudyConfig field, for the flags that override a --config file
_STUDY_FLAGS = ("dataset", "data", "space", "strategy", "preset", "evaluator", "fidelity",
                "max_params", "max_mflops", "min_intensity", "max_memory", "trials", "time",
                "workers", "ray", "trial_timeout", "max_consecutive_failures", "seed", "out",
                "init_from", "elastic_threads")
_RESUME_FLAGS = ("trials", "time", "workers", "ray", "trial_timeout",
                 "max_consecutive_failures", "elastic_threads")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, stopped like Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def study_config(args: argparse.Namespace) -> StudyConfig:
    """The effective config of ``epnas search``: --config file, then flags, then defaults."""
    base = read_config_file(args.config) if args.config else {}
    overrides: dict[str, Any] = {k: getattr(args, k) for k in _STUDY_FLAGS
                                 if getattr(args, k) is not None}
    for kind in ("space", "strategy", "evaluator"):
        options = parse_options(getattr(args, f"{kind}_opt"), f"--{kind}-opt")
        if options:
            overrides[f"{kind}_options"] = options
    if args.constraint:
        overrides["constraints"] = args.constraint
    if args.filter:
        overrides["filters"] = args.filter
    config = _with_strategy_spec(merge(base, overrides)).resolved()
    epnas.spaces.resolve(config.space)
    strategy_options(config)  # checks the strategy and its preset
    EVALUATORS.resolve(config.evaluator)  # type: ignore[arg-type]
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config.space}-{config.strategy}-{stamp}")
        config = config.model_copy(update={"out": str(Path("runs") / name)})
    return config


def _with_strategy_spec(settings: dict[str, Any]) -> StudyConfig:
    """The config of ``settings`` whose ``strategy`` may be a spec (``epnas[lr=0]+filter``):
    the plain name is stored, the bracket options go under ``strategy_options`` (which
    win) and ``+filter`` turns the constraints into early-exit filters."""
    if not isinstance(settings.get("strategy"), str):
        return StudyConfig.parse(settings)
    spec = strategy_spec.parse(settings["strategy"])
    options = settings.get("strategy_options")
    if spec.options and isinstance(options, dict | None):
        settings = {**settings, "strategy_options": {**spec.options, **(options or {})}}
    config = StudyConfig.parse({**settings, "strategy": spec.name})
    if spec.filter:
        limits = [str(limit) for limit in constraint_limits(config.objective())]
        filters = list(dict.fromkeys([*config.filters, *limits]))
        config = StudyConfig.parse({**config.model_dump(), "filters": filters})
    return config


def cmd_search(args: argparse.Namespace) -> int:
    config = study_config(args)
    if args.print_config:
        sys.stdout.write(config.to_yaml())
        return 0
    return _run_study(config, args, force_new=args.force_new)


def cmd_resume(args: argparse.Namespace) -> int:
    with Store(args.run_dir, readonly=True) as store:
        stored = store.get_meta("config")
    if stored is None:
        raise EpnasError(f"{args.run_dir} holds no study configuration")
    overrides = {k: getattr(args, k) for k in _RESUME_FLAGS if getattr(args, k) is not None}
    config = StudyConfig.parse({**stored, **overrides, "out": args.run_dir})
    return _run_study(config, args, force_new=False)


def _run_study(config: StudyConfig, args: argparse.Namespace, *, force_new: bool) -> int:
    to_stdout = args.json == "-"
    stream = sys.stderr if to_stdout else sys.stdout
    console = Console(file=stream, highlight=False, soft_wrap=True)
    study = Study.from_config(config, force_new=force_new)
    if study.worker_limit is not None and study.worker_limit.reason is not None:
        console.print(f"epnas: {study.worker_limit}")
    config = study.config  # what the run uses (its workers capped to the machine)
    start = study.summary()
    trials, why = study.trial_budget()
    live = stream.isatty() and not args.quiet
    reporter = (LiveReporter(config, start, stream, config.out, budget=trials) if live
                else LineReporter(config, start, stream, budget=trials))
    study.progress = reporter.trial
    budget = [f"{trials} trials" + (f": {why}" if why else "")] if trials else []
    budget += [f"{duration(config.time)}"] if config.time else []
    verb = "resuming" if start.trials else "searching"
    console.print(f"epnas: {verb} {config.space} with {config.strategy}, evaluator "
                  f"{config.evaluator} ({' / '.join(budget) or 'no budget'}"
                  f"{'; ' if why else ', '}{_executor_text(config)}); run: {config.out}")
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    code = 0
    try:
        with study, reporter:
            try:
                summary = study.run()
            except StudyFailed as exc:
                print(f"epnas: {exc}", file=sys.stderr)
                summary, code = study.summary(), EXIT_FAILED
            except KeyboardInterrupt as exc:
                stopped = study.summary()
                again = stopped.trials - stopped.finished
                rerun = f" ({again} unfinished run again on resume)" if again else ""
                console.print(f"epnas: stopped after {stopped.finished} finished trials"
                              f"{rerun}; resume with: epnas resume {config.out}")
                return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        _emit_json(args, [json.dumps(summary.to_dict())])
    else:
        _print_summary(summary, console, study.early_stop_warning())
    return code


def _executor_text(config: StudyConfig) -> str:
    if config.ray is not None:
        where = "a local Ray" if config.ray == "local" else f"Ray at {config.ray}"
        return f"on {where}" + (f", {config.workers} workers" if config.workers > 1 else "")
    return f"{config.workers} worker{'s' * (config.workers > 1)}"


def _print_summary(summary: Summary, console: Console, warning: str | None = None) -> None:
    best = summary.best
    if best is None:
        console.print("no trial finished with a result")
    else:
        genome = best.genome
        space = epnas.spaces.space_of(genome)
        if summary.feasible:
            console.print(f"[bold]best feasible architecture[/] (trial {best.id}, "
                          f"{best.key}, {space.size(genome)} units):")
        else:
            over = ", ".join(f"{m} {100 * v:+.1f}%" for m, v in summary.violations.items())
            console.print(f"[bold]no feasible architecture found[/]; the least violating "
                          f"(trial {best.id}, {best.key}; violations: {over}):")
        console.print(f"  {space.describe(genome)}")
        console.print(f"  {metrics_text(best.metrics)}  reward {best.reward or 0.0:.4f}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    console.print(f"{summary.trials} trials ({counts or 'none'}) in "
                  f"{duration(summary.elapsed)}; stopped by {summary.stop_reason}")
    if summary.skipped:
        console.print(f"{summary.skipped} candidates skipped by the filters before evaluation")
    if warning is not None:
        console.print(f"[yellow]warning:[/] {warning}")
    if summary.run_dir:
        console.print(f"run: {summary.run_dir}  (epnas status {summary.run_dir}; continue with "
                      f"epnas resume {summary.run_dir} --trials N)")


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    with Store(run_dir, readonly=True) as store:
        config = StudyConfig.parse(store.get_meta("config") or {})
        summary = summarize(store, config)
        ranked = sorted((t for t in store.trials("done") if t.accuracy is not None),
                        key=lambda t: (-(t.reward or 0.0), t.id))[:10]
    holder = holder_pid(run_dir)
    if args.json:
        _emit_json(args, [json.dumps({**summary.to_dict(), "running_pid": holder,
                                      "top": [t.to_dict() for t in ranked]})])
        return 0
    console = Console(highlight=False, soft_wrap=True)
    state = f"running (pid {holder})" if holder else "not running"
    console.print(f"[bold]{run_dir}[/]: {config.space} / {config.strategy} / "
                  f"{config.evaluator}, {state}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    left = []
    if config.trials is not None:
        left.append(f"{max(0, config.trials - summary.trials)} trials")
    if config.time is not None:
        left.append(duration(max(0.0, config.time - summary.elapsed)))
    console.print(f"trials {summary.trials} ({counts or 'none'}); elapsed "
                  f"{duration(summary.elapsed)}; budget left: {', '.join(left) or 'unlimited'}")
    if config.filters:
        console.print(f"filters {', '.join(config.filters)}: {summary.skipped} candidates "
                      "skipped before evaluation")
    unfinished = summary.counts.get("running", 0) + summary.counts.get("queued", 0)
    if not holder and unfinished:
        console.print(f"{unfinished} trials were in flight when the run stopped; `epnas resume "
                      f"{run_dir}` runs them again")
    if summary.best is not None:
        label = "best feasible" if summary.feasible else "no feasible yet; least violating"
        console.print(f"{label}: #{summary.best.id}  {metrics_text(summary.best.metrics)}")
    table = Table(title="top 10 by reward")
    for column in ("#", "accuracy", "params", "MFLOPs", "intensity", "reward", "feasible"):
        table.add_column(column, justify="right", no_wrap=True)
    for t in ranked:
        m = t.metrics
        table.add_row(str(t.id), f"{100 * (t.accuracy or 0):.2f}%",
                      f"{m['params']:,.0f}" if "params" in m else "",
                      f"{m['flops'] / 1e6:,.2f}" if "flops" in m else "",
                      f"{m['intensity']:.2f}" if "intensity" in m else "",
                      f"{t.reward or 0.0:.4f}", "yes" if t.feasible else "no")
    console.print(table)
    for t in ranked:  # architectures are long: one line each, below the table
        console.print(f"#{t.id}  {epnas.spaces.space_of(t.genome).describe(t.genome)}")
    return 0


def _budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, help="trial budget; cached repeats count (default 100)")
    p.add_argument("--time", help="wall-time budget, e.g. 2h, 30m, 90s")
    p.add_argument("--workers", type=int, help="parallel evaluations in local processes")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="evaluate on Ray: alone, start a local Ray; 'auto' or an address "
                        "joins a cluster (--workers: trials in flight, default one per CPU "
                        "or GPU)")
    p.add_argument("--trial-timeout", metavar="TIME", help="fail a trial after this long")
    p.add_argument("--elastic-threads", action=argparse.BooleanOptionalAction,
                   help="let local workers lend idle cores to the last trials of a batch "
                        "(default on; off: parallel runs repeat bit for bit)")
    p.add_argument("--max-consecutive-failures", type=int, metavar="N",
                   help="stop after more than N failures in a row (default 20)")
    p.add_argument("--quiet", action="store_true",
                   help="one line per trial instead of the live display")


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


def add_study_commands(sub: Any, json_flag: Any) -> None:
    """The ``search``, ``resume`` and ``status`` subcommands."""
    p = sub.add_parser("search", help="run an architecture search",
                       description="Run an architecture search. Flags override --config; "
                                   "running it again with the same --out resumes the run.")
    p.add_argument("--config", metavar="FILE", help="YAML file of study settings")
    p.add_argument("--dataset", help="data set name (evaluators that train)")
    p.add_argument("--data", metavar="PATH", help="data location (evaluators that read one)")
    for kind, default in (("space", "layerwise"), ("strategy", "epnas"),
                          ("evaluator", "see epnas.config.default_evaluator")):
        spec = "; a spec NAME[KEY=VALUE,...][+filter] sets options and filters by the " \
               "constraints" if kind == "strategy" else ""
        p.add_argument(f"--{kind}", help=f"registered name or package.module:ClassName "
                                          f"(default {default}{spec})")
        p.add_argument(f"--{kind}-opt", action="append", metavar="KEY=VALUE",
                       help=f"{kind} option (repeatable)")
    p.add_argument("--preset", help="the strategy's named option set, e.g. paper or tabular "
                                    "(--strategy-opt overrides its values)")
    p.add_argument("--fidelity", help="fidelity of candidates that name none")
    constraint_flags(p)
    p.add_argument("--filter", action="append", metavar="max-METRIC=VALUE",
                   help="early exit: replace a candidate outside the limit before it is "
                        "evaluated, e.g. max-params=300k or min-intensity=8 (repeatable)")
    _budget_flags(p)
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run directory (default runs/<space>-<strategy>-<time>)")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from the best genomes of another run (same space and options)")
    p.add_argument("--force-new", action="store_true",
                   help="start over in --out even if it holds another run (kept aside)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config as YAML and exit")
    json_flag(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("resume", help="continue a stopped or finished run",
                       description="Continue a run; a larger --trials or --time extends it.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _budget_flags(p)
    json_flag(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="summarise a run (also while it runs)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    json_flag(p)
    p.set_defaults(func=cmd_status)


def cmd_train(args: argparse.Namespace) -> int:
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
    cost = epnas.cost(genome, data.input_shape, data.num_classes)
    console = Console(stderr=bool(args.json == "-"))
    console.print(f"training {epnas.spaces.space_of(genome).describe(genome)} "
                  f"({cost.params:,} params, {cost.mflops:,.2f} MFLOPs) on {data.name} "
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
              **cost.as_dict(schedule.batch_size)}
    if args.json:
        _emit_json(args, [json.dumps(result)])
    if args.json != "-":
        test = "n/a" if run.test_accuracy is None else f"{100 * run.test_accuracy:.2f}%"
        console.print(f"{run.status}: validation {100 * run.accuracy:.2f}%  test {test}  "
                      f"{run.epochs} epochs in {run.train_seconds:.1f}s "
                      f"({run.images_per_second:,.0f} img/s)")
    return 0 if run.status == "done" else 1


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

    add_study_commands(sub, json_flag)
    retrain.add_command(sub, json_flag)
    report_command.add_parser(sub)
    export.add_command(sub, json_flag)
    predict.add_command(sub, json_flag)
    add_benchmark_command(sub, json_flag)
    proxy_study.add_command(sub, json_flag)
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
