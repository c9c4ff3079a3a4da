"""Constrained search with real training: EPNAS against the methods a practitioner knows.

    python benchmarks/constrained_search.py --json runs/bench-constrained-search/results.json
    python benchmarks/constrained_search.py --smoke          # the plumbing, in under a minute

Every strategy searches the ``layerwise`` space on Fashion-MNIST under a FLOPs cap
(default at most 1 MFLOPs at 1x28x28, which 23% of the space's random networks
satisfy; the share is measured with the space's sampler and printed) with the soft
penalty of DESIGN.md, each candidate trained under an EcoNAS reduced setting (default
``full,c=0.25,r=0.5,s=0.1,e=2``: a quarter of the channels, 14x14 images, a tenth of
the training set, 2 epochs). Rows are strategy specs (``--strategies``, any
``NAME[KEY=VALUE,...][+filter]``, e.g. ``epnas[screen=4]``); the default rows:

* ``epnas``: EPNAS as a Study runs it when nothing is named (the study picks the preset);
* ``epnas[lr=0]``: the same with a frozen policy (the control: what the learning adds);
* ``evolution``: regularized evolution, default options;
* ``random+filter``: random search with the EEEA early exit at the cap
  (``filters=["max-mflops=..."]``): it never trains an infeasible network.

Two comparisons, each over seeds ``0..--seeds-1`` (the seed of the strategy and of the
training), read from the same searches: at equal trials (``--trials`` each), and at
equal wall time: each search as it stood after ``--time`` seconds (by default, and at
most, the wall time of the shortest search, so that every search was still running
then). No strategy here looks at its budget before it is spent (EPNAS sizes its
branches from the trial budget, 8 for any budget of 64 trials or more), so a search's
first ``T`` seconds are the search a ``T``-second budget would have run, at half the
cost of running them again. Every search is an inline Study (``workers=1``, one torch
thread), its trials timed by their end; ``--jobs N`` runs N of them side by side in
processes (seeds outermost, so every strategy meets the same load), and wall times
compare only between runs made under the same ``--jobs``.

Per strategy it reports the mean ± standard error of the best FEASIBLE accuracy at the
search's fidelity (a run with nothing feasible counts as the worst in its table), the
share of seeds whose best is feasible, the trials run and why runs stopped, and, so the
comparison is not only about the proxy, the validation and test accuracy of each run's
best feasible network after a fixed medium training (``--medium``, default the
``prediction`` schedule: 4 epochs on the full training set, weights seeded by 0,
identical for every network; cached per genome in ``--cache``). Then the differences,
ratios and Welch's t of ``--reference`` (EPNAS) against every other row. ``--json``
writes every figure (accuracies in percent) and every run.

Why these defaults (measured on one core of the 2-core x86 machine the benchmark was
written on): the setting costs 0.45-0.8 s per network within the cap and 0.94 s of CPU
per trial averaged over a regularized-evolution search (whose random first population
holds networks of 100+ MFLOPs, 5-7 s each), so a 200-trial search takes 2-3 minutes;
its ``full`` base reaches 40-65% where ``prediction`` (batch 256, half the steps)
reaches 20-60% at the same cost. The cap is on FLOPs rather than parameters because
it also bounds the training time of feasible networks: a 5.8k-parameter network may
take 8 MFLOPs and 125 s of medium training, while networks within 1 MFLOPs take
26-42 s. 13% of random networks are stem, pools and head only and meet any cap.

The default run is 4 strategies x 5 seeds = 20 searches of 2-5 minutes of one core each
plus up to 40 medium trainings of 25-45 s: under an hour on 2 quiet cores with
``--jobs 2`` (more where other work shares the cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy import stats

import epnas
from epnas.errors import EpnasError
from epnas.evaluators.proxy import Setting
from epnas.evaluators.training import TrainingEvaluator, train_genome
from epnas.executors import exit_with_parent
from epnas.spaces.registry import load_genome
from epnas.strategies.spec import parse as parse_spec
from epnas.strategies.spec import split as split_specs
from epnas.study import Study

SPACE = "layerwise"
FIDELITY = "full,c=0.25,r=0.5,s=0.1,e=2"  # the search's EcoNAS reduced setting
MEDIUM = "prediction"  # the fixed longer training of each run's best feasible network
MEDIUM_SEED = 0  # one weight initialisation and data order for every network
MAX_MFLOPS = 1.0
SHARE_SAMPLES = 4000  # random genomes that measure the constraint's feasible share
SMOKE = {"seeds": 1, "trials": 4, "fidelity": "full,c=0.25,r=0.5,s=0.03,e=1",
         "medium": "prediction,s=0.03,e=1"}


@dataclass(frozen=True)
class Row:
    """A strategy as one table row: its registered name, options and EEEA filter."""

    label: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    use_filter: bool = False

    @classmethod
    def of(cls, label: str) -> Row:
        """The row of a strategy spec (``NAME[KEY=VALUE,...][+filter]``), named as written."""
        spec = parse_spec(label)
        return cls(label, spec.name, dict(spec.options), spec.filter)


DEFAULT_ROWS = "epnas,epnas[lr=0],evolution,random+filter"


@dataclass(frozen=True)
class RunSpec:
    """One search (picklable: it travels to a worker process)."""

    row: Row
    seed: int
    trials: int
    fidelity: str
    max_mflops: float
    dataset: str
    data: str | None


def run_search(spec: RunSpec) -> dict[str, Any]:
    """Run one inline Study; what the tables need, accuracies in percent."""
    torch.set_num_threads(1)
    row = spec.row
    filters = [f"max-mflops={spec.max_mflops:g}"] if row.use_filter else []
    with Study(space=SPACE, strategy=row.strategy, strategy_options=row.options,
               evaluator="training", dataset=spec.dataset, data=spec.data,
               fidelity=spec.fidelity, max_mflops=spec.max_mflops, filters=filters,
               trials=spec.trials, workers=1, seed=spec.seed,
               out=None) as study:
        # load and reduce the data now, so that neither budget nor wall time counts it
        study.evaluator.reduced(Setting.parse(spec.fidelity))
        start, epoch = time.perf_counter(), time.time()
        summary = study.run()
        wall = time.perf_counter() - start
        trials = study.trials()
    evaluated = [t for t in trials if t.status in ("done", "failed")]
    curve, best = [], math.nan
    timeline: list[dict[str, Any]] = []  # per trial, for the equal-time reading
    bests: dict[str, dict[str, Any]] = {}  # each best so far, by key
    best_key = None
    for t in sorted(trials, key=lambda t: (t.end_time or math.inf, t.id)):
        if t.status in ("done", "cached") and t.feasible and t.accuracy is not None \
                and not 100 * t.accuracy <= best:  # best feasible accuracy after each trial
            best, best_key = 100 * t.accuracy, t.key
            bests[t.key] = {"best_feasible": best, "best_key": t.key,
                            "best_genome": t.genome_json,
                            "best_mflops": t.metrics.get("flops", 0.0) / 1e6,
                            "best_params": t.metrics.get("params")}
        curve.append(None if math.isnan(best) else float(best))
        timeline.append({"seconds": (t.end_time or math.inf) - epoch, "status": t.status,
                         "feasible": bool(t.feasible), "best_key": best_key})
    found = summary.best if summary.feasible else None
    return {
        "comparison": "trials", "strategy": row.label, "seed": spec.seed,
        "trials": len(trials), "evaluated": len(evaluated),
        "failed": sum(t.status == "failed" for t in trials),
        "repeats": sum(t.status == "cached" for t in trials), "skipped": summary.skipped,
        "wall_seconds": wall, "stop_reason": summary.stop_reason,
        "feasible_share": (sum(bool(t.feasible) for t in evaluated) / len(evaluated)
                           if evaluated else None),
        "best_feasible": None if found is None else 100 * found.accuracy,
        "best_key": None if found is None else found.key,
        "best_genome": None if found is None else found.genome_json,
        "best_mflops": None if found is None else found.metrics.get("flops", 0.0) / 1e6,
        "best_params": None if found is None else found.metrics.get("params"),
        "curve": curve,
        "timeline": timeline,
        "bests": bests,
    }


def at_time(run: dict[str, Any], budget: float) -> dict[str, Any]:
    """What an equal-trials ``run`` had found after ``budget`` seconds of its wall time:
    the run a time budget would have stopped there (searches here never look at their
    budget before it is spent, so a longer run's first ``budget`` seconds are that run)."""
    done = [e for e in run["timeline"] if e["seconds"] <= budget]
    evaluated = [e for e in done if e["status"] in ("done", "failed")]
    best = run["bests"].get(done[-1]["best_key"], {}) if done else {}
    return {**{k: v for k, v in run.items() if k not in ("timeline", "curve", "bests")},
            "comparison": "time", "trials": len(done), "evaluated": len(evaluated),
            "failed": sum(e["status"] == "failed" for e in done),
            "repeats": sum(e["status"] == "cached" for e in done),
            "wall_seconds": budget, "stop_reason": "time",
            "feasible_share": (sum(e["feasible"] for e in evaluated) / len(evaluated)
                               if evaluated else None),
            **{k: best.get(k) for k in ("best_feasible", "best_key", "best_genome",
                                        "best_mflops", "best_params")}}


@dataclass(frozen=True)
class MediumSpec:
    """The medium training of one genome (cached in ``cache`` under its identity)."""

    genome_json: str
    fidelity: str
    dataset: str
    data: str | None
    cache: str


def medium_identity(spec: MediumSpec, key: str) -> dict[str, Any]:
    return {"key": key, "fidelity": str(Setting.parse(spec.fidelity)), "dataset": spec.dataset,
            "seed": MEDIUM_SEED, "epnas": epnas.__version__}


def medium_path(spec: MediumSpec, key: str) -> Path:
    identity = json.dumps(medium_identity(spec, key), sort_keys=True).encode()
    return Path(spec.cache) / f"{key}-{hashlib.sha256(identity).hexdigest()[:12]}.json"


def train_medium(spec: MediumSpec) -> dict[str, Any]:
    """Validation and test accuracy (percent) of a genome after the medium training."""
    torch.set_num_threads(1)
    genome = load_genome(spec.genome_json)
    path = medium_path(spec, genome.key)
    if path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    evaluator = TrainingEvaluator(spec.dataset, spec.data, seed=MEDIUM_SEED, share=False)
    setting = Setting.parse(spec.fidelity)
    data = evaluator.reduced(setting)
    schedule = evaluator.schedule(str(setting), data)
    cpu = time.process_time()
    run = train_genome(setting.genome(genome), data, schedule, seed=MEDIUM_SEED,
                       evaluate_test=True)
    ok = run.status == "done" and math.isfinite(run.accuracy)
    record = {**medium_identity(spec, genome.key), "status": run.status,
              "val": 100 * run.accuracy if ok else None,
              "test": 100 * run.test_accuracy if ok and run.test_accuracy is not None else None,
              "train_seconds": run.train_seconds, "cpu_seconds": time.process_time() - cpu,
              "genome_json": spec.genome_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # atomic: a killed run leaves no half file
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return {**record, "cached": False}


def _worker_init() -> None:
    torch.set_num_threads(1)  # each search or training is given one core
    exit_with_parent()  # a killed benchmark leaves no searches running


class Inline(Executor):
    """``--jobs 1``: run in this process, in submission order."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # as a pool would: raised by result(), Ctrl-C stops at once
            future.set_exception(exc)
        return future


def run_all(pool: Executor, fn: Callable[[Any], dict[str, Any]], specs: Sequence[Any],
            report: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """``fn`` over ``specs`` on ``pool``; results in spec order, reported as they finish."""
    if isinstance(pool, Inline):  # (its submit runs the search: report each at once)
        results = []
        for spec in specs:
            results.append(pool.submit(fn, spec).result())
            report(results[-1])
        return results
    futures = [pool.submit(fn, spec) for spec in specs]
    for future in as_completed(futures):
        report(future.result())
    return [f.result() for f in futures]


# --- statistics -------------------------------------------------------------------------


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (0 for one value, NaN for none)."""
    a = np.asarray(values, dtype=float)
    if not len(a):
        return math.nan, math.nan
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0
    return float(a.mean()), se


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t and two-sided p of mean(a) - mean(b); NaN when undefined."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # equal constant samples: NaN, said in the table as —
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_ind(a, b, equal_var=False)
    return float(t.statistic), float(t.pvalue)


def summarize(runs: list[dict[str, Any]], labels: Sequence[str],
              medium: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per strategy: proxy and medium accuracies per seed and their means ± se."""
    found = [r["best_feasible"] for r in runs if r["best_feasible"] is not None]
    worst = min(found) if found else 0.0  # a seed with nothing feasible counts as the worst
    out = {}
    for label in labels:
        mine = [r for r in runs if r["strategy"] == label]
        proxy = [worst if r["best_feasible"] is None else r["best_feasible"] for r in mine]
        trained = [medium.get(r["best_key"]) for r in mine if r["best_key"] is not None]
        val = [m["val"] for m in trained if m and m["val"] is not None]
        test = [m["test"] for m in trained if m and m["test"] is not None]
        reasons: dict[str, int] = {}
        for r in mine:
            reasons[str(r["stop_reason"])] = reasons.get(str(r["stop_reason"]), 0) + 1
        shares = [r["feasible_share"] for r in mine if r["feasible_share"] is not None]
        out[label] = {
            "seeds": len(mine), "proxy": proxy, "medium_val": val, "medium_test": test,
            "proxy_mean_se": mean_se(proxy), "medium_val_mean_se": mean_se(val),
            "medium_test_mean_se": mean_se(test),
            "feasible": float(np.mean([r["best_feasible"] is not None for r in mine]))
            if mine else math.nan,
            "trials_mean": float(np.mean([r["trials"] for r in mine])) if mine else math.nan,
            "trials_range": [min(r["trials"] for r in mine), max(r["trials"] for r in mine)]
            if mine else None,
            "feasible_trial_share": float(np.mean(shares)) if shares else math.nan,
            "wall_mean": float(np.mean([r["wall_seconds"] for r in mine])) if mine else math.nan,
            "stop_reasons": reasons,
        }
    return out


def versus(summary: dict[str, dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """The reference row against every other: difference, ratio, Welch's t, per measure."""
    ref = summary[reference]
    rows = []
    for label, other in summary.items():
        if label == reference:
            continue
        row: dict[str, Any] = {"strategy": label}
        for measure in ("proxy", "medium_val", "medium_test"):
            a, b = ref[measure], other[measure]
            ma, mb = (float(np.mean(v)) if len(v) else math.nan for v in (a, b))
            t, p = welch(a, b)
            row[measure] = {"difference": ma - mb, "ratio": ma / mb if mb else math.nan,
                            "t": t, "p": p}
        rows.append(row)
    return rows


# --- output -----------------------------------------------------------------------------


def _pm(pair: tuple[float, float]) -> str:
    mean, se = pair
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {se:.2f}"


def _num(value: float, fmt: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, fmt)


def print_tables(console: Console, title: str, summary: dict[str, dict[str, Any]],
                 compared: list[dict[str, Any]], reference: str) -> None:
    table = Table(title=title)
    for name in ("strategy", "best feasible % (search)", "feasible seeds", "trials",
                 "feasible trials", "s/run", "stopped by", "medium val %", "medium test %"):
        table.add_column(name, justify="left" if name in ("strategy", "stopped by") else "right")
    for label, s in summary.items():
        low, high = s["trials_range"] or (0, 0)
        trials = f"{s['trials_mean']:.0f}" + (f" ({low}-{high})" if low != high else "")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["stop_reasons"].items()))
        table.add_row(escape(label), _pm(s["proxy_mean_se"]), f"{s['feasible']:.0%}", trials,
                      _num(100 * s["feasible_trial_share"], ".0f") + "%",
                      _num(s["wall_mean"], ".0f"), reasons, _pm(s["medium_val_mean_se"]),
                      _pm(s["medium_test_mean_se"]))
    console.print(table)
    if not compared:
        return
    diff = Table(title=f"{escape(reference)} against each row: difference of the means "
                       "(points), their ratio, Welch's t and p")
    diff.add_column("vs")
    for measure in ("search", "medium val", "medium test"):
        diff.add_column(measure, justify="right")
    for row in compared:
        cells = []
        for measure in ("proxy", "medium_val", "medium_test"):
            m = row[measure]
            cells.append(f"{_num(m['difference'], '+.2f')} x{_num(m['ratio'], '.3f')} "
                         f"t={_num(m['t'], '+.2f')} p={_num(m['p'], '.2g')}")
        diff.add_row(escape(row["strategy"]), *cells)
    console.print(diff)


def constraint_share(max_mflops: float, input_shape: tuple[int, int, int],
                     num_classes: int) -> float:
    """The share of the space's random genomes (its own sampler) within the cap."""
    space = epnas.spaces.get(SPACE)
    rng = np.random.default_rng(0)
    flops = [epnas.cost(space.sample(rng), input_shape, num_classes).flops
             for _ in range(SHARE_SAMPLES)]
    return float(np.mean(np.asarray(flops) <= max_mflops * 1e6))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=200, help="the equal-trials budget")
    parser.add_argument("--time", type=float,
                        help="the equal-time budget in seconds (default, and at most: the "
                             "shortest wall time of the equal-trials runs)")
    parser.add_argument("--comparisons", default="trials,time",
                        help="which to report: trials, time or both (both read the "
                             "same equal-trials searches)")
    parser.add_argument("--strategies", default=DEFAULT_ROWS,
                        help="comma-separated strategy specs, each a row named as written "
                             "(NAME[KEY=VALUE,...][+filter], e.g. 'epnas[screen=4]')")
    parser.add_argument("--reference", default="epnas", help="the row compared with the others")
    parser.add_argument("--max-mflops", type=float, default=MAX_MFLOPS,
                        help="the constraint: forward MFLOPs at the data set's input size")
    parser.add_argument("--fidelity", default=FIDELITY, help="the search's training setting")
    parser.add_argument("--medium", default=MEDIUM,
                        help="the fixed training of each run's best feasible network "
                             "('none': skip)")
    parser.add_argument("--jobs", type=int, default=2, help="searches run side by side")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data", help="the data set's directory (default: the usual places)")
    parser.add_argument("--cache", default="runs/bench-constrained-search/medium",
                        help="medium-training results, one JSON per genome")
    parser.add_argument("--json", metavar="OUT", help="write every figure to this file")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a check of the plumbing: {SMOKE} unless given")
    args = parser.parse_args()
    if args.smoke:  # smoke values fill in what the command line left at its default
        for key, value in SMOKE.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    labels = split_specs(args.strategies)
    try:
        rows_by_label = {label: Row.of(label) for label in labels}
    except EpnasError as exc:
        parser.error(str(exc))
    comparisons = [c.strip() for c in args.comparisons.split(",")]
    if not set(comparisons) <= {"trials", "time"} or not comparisons:
        parser.error("--comparisons takes trials, time or trials,time")
    reference = args.reference if args.reference in labels else labels[0]
    Setting.parse(args.fidelity)
    if args.medium != "none":
        Setting.parse(args.medium)

    console = Console(width=max(Console().width, 140))  # logs too
    started = time.perf_counter()
    data = TrainingEvaluator(args.dataset, args.data).loaded
    share = constraint_share(args.max_mflops, data.input_shape, data.num_classes)
    console.print(
        f"{platform.processor() or platform.machine()}, {args.jobs} job(s) of 1 thread; "
        f"{data.name} {'x'.join(map(str, data.input_shape))}, space {SPACE}; constraint "
        f"flops <= {args.max_mflops:g} MFLOPs, met by {share:.1%} of {SHARE_SAMPLES} random "
        f"{SPACE} networks (the space's sampler); search fidelity {args.fidelity!r}; medium "
        f"training {args.medium!r}; {args.seeds} seeds", markup=False)

    runs: dict[str, list[dict[str, Any]]] = {}
    medium: dict[str, dict[str, Any]] = {}
    time_budget = args.time

    def progress(total: int) -> Callable[[dict[str, Any]], None]:
        count = [0]

        def report(r: dict[str, Any]) -> None:
            count[0] += 1
            best = "nothing feasible" if r["best_feasible"] is None else \
                f"{r['best_feasible']:.2f}% ({r['best_mflops']:.2f} MFLOPs)"
            console.print(f"  [{count[0]}/{total}] {r['comparison']:6s} {r['strategy']:14s} "
                          f"seed {r['seed']}: {r['trials']} trials in {r['wall_seconds']:.0f}s "
                          f"({r['stop_reason']}), best feasible {best}", markup=False,
                          highlight=False)
        return report

    pool: Executor = (Inline() if args.jobs == 1 else ProcessPoolExecutor(
        args.jobs, mp_context=get_context("spawn"), initializer=_worker_init))
    if args.jobs == 1:
        _worker_init()
    with pool:
        specs = [RunSpec(rows_by_label[label], seed, args.trials,
                         args.fidelity, args.max_mflops, args.dataset, args.data)
                 for seed in range(args.seeds) for label in labels]
        console.print(f"equal trials: {len(specs)} searches, {args.trials} trials each")
        searched = run_all(pool, run_search, specs, progress(len(specs)))
        shortest = min(r["wall_seconds"] for r in searched)
        if time_budget is None or time_budget > shortest:
            if time_budget is not None:
                console.print(f"--time {time_budget:g} s is past the shortest run's end: "
                              f"read at {shortest:.3g} s instead")
            time_budget = shortest
        if "trials" in comparisons:
            runs["trials"] = searched
        if "time" in comparisons:
            console.print(f"equal wall time: each of those searches as it stood after "
                          f"{time_budget:.3g} s (the shortest search's wall time)")
            runs["time"] = [at_time(r, time_budget) for r in searched]
        if args.medium != "none":
            genomes = {r["best_key"]: r["best_genome"] for rs in runs.values() for r in rs
                       if r["best_key"] is not None}
            specs_m = [MediumSpec(g, args.medium, args.dataset, args.data, args.cache)
                       for g in genomes.values()]
            console.print(f"medium training {args.medium!r} of {len(specs_m)} distinct best "
                          f"feasible networks (cache {args.cache})")

            def report_medium(m: dict[str, Any]) -> None:
                how = "cached" if m["cached"] else f"{m['train_seconds']:.0f}s"
                console.print(f"  {m['key']}: val {_num(m['val'], '.2f')}% test "
                              f"{_num(m['test'], '.2f')}% ({how})", markup=False,
                              highlight=False)

            for m in run_all(pool, train_medium, specs_m, report_medium):
                medium[m["key"]] = m

    results: dict[str, Any] = {}
    for comparison, rs in runs.items():
        summary = summarize(rs, labels, medium)
        compared = versus(summary, reference)
        budget = (f"{args.trials} trials" if comparison == "trials"
                  else f"{time_budget:.3g} s of wall time")
        print_tables(console, f"{data.name}, flops <= {args.max_mflops:g} MFLOPs, equal "
                              f"{comparison} ({budget}), {args.seeds} seeds: mean ± se",
                     summary, compared, reference)
        results[comparison] = {
            "budget": args.trials if comparison == "trials" else time_budget,
            "rows": [{"strategy": label, **{k: v for k, v in s.items()
                                            if not k.endswith("_mean_se")},
                      "proxy_mean": s["proxy_mean_se"][0], "proxy_se": s["proxy_mean_se"][1],
                      "medium_val_mean": s["medium_val_mean_se"][0],
                      "medium_val_se": s["medium_val_mean_se"][1],
                      "medium_test_mean": s["medium_test_mean_se"][0],
                      "medium_test_se": s["medium_test_mean_se"][1]}
                     for label, s in summary.items()],
            "versus": compared}
    total = time.perf_counter() - started
    console.print(f"total {total / 60:.1f} min")
    if args.json:
        out = {"config": {**{k: v for k, v in vars(args).items() if k != "json"},
                          "space": SPACE, "time_budget": time_budget,
                          "medium_seed": MEDIUM_SEED},
               "constraint": {"metric": "flops", "max_mflops": args.max_mflops,
                              "random_share": share, "samples": SHARE_SAMPLES,
                              "input_shape": list(data.input_shape)},
               "reference": reference, "results": results,
               "runs": [{k: v for k, v in r.items() if k != "best_genome"}
                        for rs in runs.values() for r in rs],
               "medium": medium, "seconds": total}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_json_safe(out), indent=1) + "\n")
        console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
