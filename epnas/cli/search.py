"""``epnas search``, ``resume`` and ``status``: run a study and look at it."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from epnas import spaces
from epnas.config import StudyConfig, merge, read_config_file
from epnas.errors import EpnasError
from epnas.evaluators import EVALUATORS
from epnas.evaluators.proxy import accuracy_label, pretext_of
from epnas.evaluators.supernet import flag_value
from epnas.flags import constraint_flags, emit_json, json_flag, parse_options
from epnas.progress import LineReporter, LiveReporter, duration, metrics_text
from epnas.store import Store, holder_pid
from epnas.study import (
    Study,
    StudyFailed,
    Summary,
    recorded_paths,
    strategy_options,
    summarize,
    with_evaluator_space,
)

EXIT_FAILED = 1  # the search ran but stopped: too many failures in a row
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (a preempted cluster job)

# flag -> StudyConfig field, for the flags that override a --config file
_STUDY_FLAGS = ("dataset", "data", "space", "strategy", "preset", "evaluator", "fidelity",
                "max_params", "max_mflops", "min_intensity", "max_memory", "trials", "time",
                "workers", "workers_per_gpu", "ray", "trial_timeout", "max_consecutive_failures",
                "seed", "out", "init_from", "elastic_threads", "precision")
_RESUME_FLAGS = ("trials", "time", "workers", "workers_per_gpu", "ray", "trial_timeout",
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
    config = StudyConfig.parse(merge(base, overrides)).resolved()  # the one parse
    config = recorded_paths(with_evaluator_space(config))
    spaces.resolve(config.space)  # type: ignore[arg-type]
    strategy_options(config)  # checks the strategy and its preset
    EVALUATORS.resolve(config.evaluator)  # type: ignore[arg-type]
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config.space}-{config.strategy}-{stamp}")
        config = config.model_copy(update={"out": str(Path("runs") / name)})
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
    return _run_study(config, args, force_new=False, extend=args.trials is not None)


def _run_study(config: StudyConfig, args: argparse.Namespace, *, force_new: bool,
               extend: bool = False) -> int:
    to_stdout = args.json == "-"
    stream = sys.stderr if to_stdout else sys.stdout
    console = Console(file=stream, highlight=False, soft_wrap=True)
    study = Study.from_config(config, force_new=force_new, extend=extend)
    try:
        config, reporter = _announce(study, args, stream, console)
    except BaseException:  # an error before the run starts still releases the run directory
        study.close()
        raise
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
        emit_json(args, [json.dumps(summary.to_dict())])
    else:
        _print_summary(summary, console, study.early_stop_warning())
    return code


def _announce(study: Study, args: argparse.Namespace, stream: TextIO,
              console: Console) -> tuple[StudyConfig, LiveReporter | LineReporter]:
    """Print the run's header; (the configuration the run uses, its progress reporter)."""
    if study.worker_limit is not None and study.worker_limit.reason is not None:
        console.print(f"epnas: {study.worker_limit}")
    config = study.config  # what the run uses (its workers capped to the machine)
    start = study.summary()
    trials, why = study.trial_budget()
    live = stream.isatty() and not args.quiet
    report = study.strategy.report_fidelity
    reporter = (LiveReporter(config, start, stream, config.out, budget=trials,
                             report_fidelity=report) if live
                else LineReporter(config, start, stream, budget=trials, report_fidelity=report))
    study.progress = reporter.trial
    study.trial_progress = reporter.epoch
    budget = [f"{trials} trials" + (f": {why}" if why else "")] if trials else []
    budget += [f"{duration(config.time)}"] if config.time else []
    verb = "resuming" if start.trials else "searching"
    task = pretext_of(config.fidelity)
    note = f", accuracy = the {task} pretext task's, no label read" if task else ""
    console.print(f"epnas: {verb} {config.space} with {config.strategy}, evaluator "
                  f"{config.evaluator}{note} ({' / '.join(budget) or 'no budget'}"
                  f"{'; ' if why else ', '}{_executor_text(config)}{_precision_text(config)}"
                  f"); run: {config.out}")
    if study.evaluator.rated_space() is not None:  # the space it rates, which a user may not name
        options = " ".join(f"{k}={flag_value(v)}" for k, v in config.space_options.items())
        console.print(f"epnas: space {config.space} as the {config.evaluator} evaluator "
                      f"rates it: {options}")
    return config, reporter


def _precision_text(config: StudyConfig) -> str:
    """``, precision bf16 (auto: ...)`` once the run decided it; empty for evaluators
    that do not train."""
    if config.precision == "auto":
        return ""
    note = f" ({config.precision_note})" if config.precision_note else ""
    return f", precision {config.precision}{note}"


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
        space = spaces.space_of(genome)
        if summary.feasible:
            console.print(f"[bold]best feasible architecture[/] (trial {best.id}, "
                          f"{best.key}, {space.size(genome)} units):")
        else:
            over = ", ".join(f"{m} {100 * v:+.1f}%" for m, v in summary.violations.items())
            console.print(f"[bold]no feasible architecture found[/]; the least violating "
                          f"(trial {best.id}, {best.key}; violations: {over}):")
        console.print(f"  {space.describe(genome)}")
        console.print(f"  {metrics_text(best.metrics, best.fidelity)}  "
                      f"reward {best.reward or 0.0:.4f}")
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
                        key=lambda t: t.rank, reverse=True)[:10]
        retried = [t for t in store.trials() if t.lost]
        # recorded by the last run: the budget its strategy's own schedule leaves usable
        planned, over = store.get_meta("trial_budget"), store.get_meta("strategy_done")
        extensible = store.get_meta("strategy_extensible")
    holder = holder_pid(run_dir)
    if args.json:
        emit_json(args, [json.dumps({
            **summary.to_dict(), "running_pid": holder,
            "retried": [{"id": t.id, "status": t.status, "retries": t.retries, "lost": t.lost}
                        for t in retried],
            "top": [t.to_dict() for t in ranked]})])
        return 0
    console = Console(highlight=False, soft_wrap=True)
    state = f"running (pid {holder})" if holder else "not running"
    console.print(f"[bold]{run_dir}[/]: {config.space} / {config.strategy} / "
                  f"{config.evaluator}, {state}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    left = []
    usable = planned if planned is not None else config.trials
    if over and (config.trials is None or summary.trials < config.trials):
        how = (f"`epnas resume {run_dir} --trials N` extends it" if extensible
               else "it asks for nothing more")
        left.append(f"none, the {config.strategy} strategy's own schedule is over ({how})")
    elif usable is not None:
        left.append(f"{max(0, usable - summary.trials)} trials")
    if config.time is not None:
        left.append(duration(max(0.0, config.time - summary.elapsed)))
    console.print(f"trials {summary.trials} ({counts or 'none'}); elapsed "
                  f"{duration(summary.elapsed)}; budget left: {', '.join(left) or 'unlimited'}")
    if config.filters:
        console.print(f"filters {', '.join(config.filters)}: {summary.skipped} candidates "
                      "skipped before evaluation")
    for t in retried:  # a worker died with it: an out-of-memory kill, a crash
        again = f"run again {t.retries}x" if t.retries else "not run again"
        console.print(f"trial #{t.id} ({t.status}): its worker died, {again}: {t.lost}")
    unfinished = summary.counts.get("running", 0) + summary.counts.get("queued", 0)
    if not holder and unfinished:
        console.print(f"{unfinished} trials were in flight when the run stopped; `epnas resume "
                      f"{run_dir}` runs them again")
    if summary.best is not None:
        label = "best feasible" if summary.feasible else "no feasible yet; least violating"
        console.print(f"{label}: #{summary.best.id}  "
                      f"{metrics_text(summary.best.metrics, summary.best.fidelity)}")
    table = Table(title="top 10 by reward")
    for column in ("#", accuracy_label(config.fidelity), "params", "MFLOPs", "intensity",
                   "reward", "feasible"):
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
        console.print(f"#{t.id}  {spaces.space_of(t.genome).describe(t.genome)}")
    return 0


def _budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, help="trial budget; cached repeats count (default 100)")
    p.add_argument("--time", help="wall-time budget, e.g. 2h, 30m, 90s")
    p.add_argument("--workers", type=int, help="parallel evaluations in local processes")
    p.add_argument("--workers-per-gpu", metavar="N",
                   help="with GPUs: N local workers per GPU, or auto (as many as its free "
                        "memory holds at the largest estimated trial); default: --workers")
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


def add_commands(sub: Any) -> None:
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
    p.add_argument("--precision", metavar="auto|fp32|bf16|fp16",
                   help="autocast precision of trials that train (default auto: decided "
                        "once per run and recorded in its config.yaml)")
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
