"""``report.html``: one self-contained page (plots as data URIs, inline CSS and script,
nothing fetched) rendered by jinja2 with autoescaping, plus the plots as PNG files."""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from epnas._version import __version__
from epnas.errors import EpnasError, storage_errors
from epnas.evaluators.proxy import accuracy_label
from epnas.progress import duration, human
from epnas.report import graphs, plots
from epnas.report.data import (
    Run,
    dna_blocks,
    episode_stats,
    feasible_range,
    ranked,
    read_run,
)
from epnas.spaces.registry import space_of
from epnas.store import TrialRecord

REPORT_NAME = "report.html"
_OWN_FILES = ("progress-*.png", "tradeoff-*.png", "exits.png", "episodes.png", "arch-*.png")


@dataclass(frozen=True)
class Image:
    """A plot: written to ``file`` and embedded in the page as ``uri``."""

    file: str
    title: str
    caption: str
    uri: str


def write_report(run_dir: str | Path, compare: Sequence[str | Path] = (),
                 out: str | Path | None = None, top: int = 3) -> Path:
    """Write the report of ``run_dir`` (compared with the ``compare`` runs) and its PNGs.

    Args:
        run_dir: the run the report is about.
        compare: other run directories whose progress is drawn next to it.
        out: the directory to write to (default ``RUN_DIR/report``).
        top: how many of the best architectures to draw.

    Returns:
        The path of ``report.html``.

    Raises:
        StorageError: ``out`` cannot be written (read-only, full, no permission): one
            line, ``storage error: PATH: CAUSE`` and where to write instead.
    """
    if top < 0:
        raise EpnasError(f"--top must be 0 or more, got {top}")
    runs = [read_run(run_dir), *(read_run(c) for c in compare)]
    _unique_names(runs)
    target = Path(out) if out is not None else Path(run_dir) / "report"
    hint = "choose another --out" if out is not None else "write it elsewhere with --out DIR"
    with storage_errors(target, hint):
        return _write(runs, target, top)


def _write(runs: list[Run], target: Path, top: int) -> Path:
    """Write the report of ``runs[0]`` (compared with the others) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for pattern in _OWN_FILES:  # a previous report may have drawn more architectures
        for stale in target.glob(pattern):
            stale.unlink()
    images: dict[str, Image] = {}

    def save(name: str, fig: Any, title: str, caption: str) -> None:
        if fig is None:
            return
        data = plots.png(fig)
        (target / name).write_bytes(data)
        images[name] = Image(name, title, caption,
                             "data:image/png;base64," + base64.b64encode(data).decode())

    run = runs[0]
    save("progress-trials.png", plots.progress_by_trials(runs), "Progress by trials",
         "Best accuracy among feasible finished trials after each trial (failed and "
         "cached trials count as trials)." + (" Dots: every trial's accuracy."
                                              if len(runs) == 1 else ""))
    save("progress-time.png", plots.progress_by_time(runs), "Progress over time",
         "The same, against wall-clock time since the first trial started (time between "
         "a stop and a resume included).")
    for metric, name in (("params", "parameters"), ("flops", "MFLOPs")):
        allowed = _range_text(run, metric)
        save(f"tradeoff-{metric}.png", plots.tradeoff(runs, metric), f"Accuracy vs {name}",
             f"Filled: feasible, hollow: infeasible; the line is the Pareto front (no other "
             f"trial is both cheaper and more accurate). {allowed}")
    save("tradeoff-avg_flops.png", plots.tradeoff(runs, "avg_flops"),
         "Accuracy vs average FLOPs (early exit)",
         "Every network at the exit thresholds chosen for it: accuracy with early exit "
         "against the mean FLOPs an input pays. Filled: feasible, hollow: infeasible; the "
         f"line is the Pareto front. {_range_text(run, 'avg_flops')}")
    best = ranked(run, 1)
    if best:
        save("exits.png", plots.exits(best[0]), "Exits of the best network",
             "Share of validation inputs that leave at each exit at the chosen thresholds "
             "(bars), and each exit's accuracy were every input to leave there (line).")
    unit, rows = episode_stats(run)
    entropy = ", and the entropy of the policy's decisions" if any(
        "entropy" in row for row in rows) else ""
    save("episodes.png", plots.episodes(run), "Per episode" if unit == "episode" else
         "Over the search", f"Share of feasible candidates and mean reward per {unit}"
         f"{entropy}." if unit == "episode" else "This strategy has no episodes: share of "
         "feasible candidates and mean reward in consecutive windows of trials.")
    architectures = []
    for rank, trial in enumerate(ranked(run, top), start=1):
        graph = graphs.graph_of(trial.genome, run.input_shape, run.num_classes)
        name = f"arch-{rank}.png"
        save(name, graphs.draw(graph) if graph else None, graph.title if graph else "", "")
        architectures.append({"rank": rank, "trial": _row(trial), "image": images.get(name)})
    html = _environment().get_template("report.html.j2").render(
        run=_summary(run), runs=[_summary(r) for r in runs], comparing=len(runs) > 1,
        images=images, architectures=architectures, rows=[_row(t) for t in run.trials],
        dna=_dna(run),
        constraints=[str(c) for c in run.objective.constraints], version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    path = target / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("epnas.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def _unique_names(runs: list[Run]) -> None:
    """Label runs by directory name, made unique with their parent's name where needed."""
    names = [r.name for r in runs]
    for i, r in enumerate(runs):
        if names.count(r.name) > 1:
            runs[i] = replace(r, name=f"{r.path.resolve().parent.name}/{r.name}")


def _range_text(run: Run, metric: str) -> str:
    allowed = feasible_range(run.objective, metric)
    if allowed is None:
        return f"No constraint on {metric}."
    low, high = allowed
    parts = [f"≥ {human(low)}"] if low > 0 else []
    parts += [f"≤ {human(high)}"] if high < math.inf else []
    return f"Shaded: the feasible range of {metric} ({' and '.join(parts)})."


def _summary(run: Run) -> dict[str, Any]:
    c = run.config
    if run.running_pid:
        state = f"running (process {run.running_pid})"
    elif run.in_flight:
        state = f"stopped with {run.in_flight} trials in flight (epnas resume {run.path})"
    else:
        state = "stopped"
    best = run.summary.best
    return {
        "name": run.name, "path": str(run.path), "space": c.space, "strategy": c.strategy,
        "preset": c.preset, "evaluator": c.evaluator, "dataset": run.dataset,
        "fidelity": c.fidelity, "accuracy": accuracy_label(c.fidelity),
        "trials": len(run.trials), "budget": c.trials,
        "counts": sorted(run.counts.items()), "elapsed": duration(run.elapsed), "state": state,
        "best": None if best is None else _row(best), "feasible": run.summary.feasible,
        "violations": {m: f"{100 * v:+.1f}%" for m, v in run.summary.violations.items()},
        "input_shape": "×".join(map(str, run.input_shape)) if run.input_shape else None,
    }


def _dna(run: Run) -> dict[str, Any] | None:
    """The per-block tables of a ``dna`` run and its assembled network; None for others."""
    blocks, final = dna_blocks(run)
    if not blocks:
        return None

    def rated(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if math.isfinite(value) else "failed"

    tables = [{"index": k, "rows": [{**_row(p.trial), "part": p.trial.info.get("part", ""),
                                     "rating": rated(p.rating), "rating_sort":
                                     p.rating if p.rating is not None and
                                     math.isfinite(p.rating) else "", "chosen": p.chosen}
                                    for p in parts]}
              for k, parts in enumerate(blocks)]
    info = final.info if final is not None else {}
    return {"blocks": tables, "final": None if final is None else _row(final),
            "rating": rated(info.get("rating")), "method": info.get("assembly", ""),
            "feasible_plan": info.get("feasible_plan")}


def _row(t: TrialRecord) -> dict[str, Any]:
    """One trial as table cells: ``text`` to show and ``sort`` to order by."""
    m = t.metrics

    def cell(value: float | None, text: str) -> dict[str, Any]:
        ok = value is not None and not math.isnan(value)
        return {"text": text if ok else "", "sort": value if ok else ""}

    acc = t.accuracy
    episode = t.info.get("episode")  # counted from 0 in the info, from 1 in the plots
    seconds = (t.end_time - t.start_time) if t.end_time and t.start_time else None
    status = t.status + (f" ({t.reason})" if t.reason else "") + \
        (f" = #{t.source}" if t.source else "")
    try:
        architecture = space_of(t.genome).describe(t.genome)
    except EpnasError as exc:  # a space that is no longer importable
        architecture = f"({exc})"
    return {
        "id": t.id, "status": t.status, "status_text": status, "error": t.error or "",
        "fidelity": t.fidelity or "", "episode": episode + 1 if isinstance(episode, int) else "",
        "accuracy": cell(acc, f"{100 * acc:.2f}%" if acc is not None else ""),
        "params": cell(m.get("params"), human(m.get("params", 0))),
        "mflops": cell(m["flops"] / 1e6 if "flops" in m else None,
                       f"{m.get('flops', 0) / 1e6:,.2f}"),
        "intensity": cell(m.get("intensity"), f"{m.get('intensity', 0):.2f}"),
        "memory": cell(m.get("memory"), human(m.get("memory", 0)) + "B"),
        "reward": cell(t.reward if t.finished else None, f"{t.reward or 0:.4f}"),
        "feasible": "" if t.feasible is None or not t.finished else
                    ("yes" if t.feasible else "no"),
        "seconds": cell(seconds, f"{seconds:.1f}" if seconds is not None else ""),
        "architecture": architecture, "key": t.key,
    }
