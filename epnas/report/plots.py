"""The report's plots, drawn with matplotlib's object API (no pyplot state, Agg output).

Each function takes runs and returns a :class:`~matplotlib.figure.Figure`, or None
when the runs hold nothing to draw; the numbers come from :mod:`epnas.report.data`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from epnas.progress import human
from epnas.report.data import (
    Run,
    best_so_far,
    episode_stats,
    exit_profile,
    feasible_range,
    pareto_front,
)
from epnas.report.data import progress_by_time as time_progress
from epnas.store import TrialRecord

# Colour-blind safe (Okabe-Ito); the first run of a comparison is the report's own.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
_SIZE = (6.4, 3.8)


def png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (figures lay themselves out: no second "tight" drawing pass)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _axes(fig: Figure, title: str, xlabel: str, ylabel: str = "accuracy"):
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def progress_by_trials(runs: Sequence[Run]) -> Figure | None:
    """Best feasible accuracy so far against the trial number, one line per run."""
    if not any(r.scored for r in runs):
        return None
    fig = Figure(figsize=_SIZE, layout="constrained")
    ax = _axes(fig, "Best feasible accuracy so far", "trial")
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        if len(runs) == 1:  # every trial as a faint dot; too busy when comparing
            dots = [(t.id, t.accuracy) for t in run.scored]
            ax.scatter(*zip(*dots), s=9, color=colour, alpha=0.25, linewidths=0,
                       label="a trial's accuracy")
        xs = range(1, len(run.trials) + 1)
        ax.step(xs, best_so_far(run.trials), where="post", color=colour, linewidth=2,
                label=_label(run, runs))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, loc="lower right")
    return fig


def progress_by_time(runs: Sequence[Run]) -> Figure | None:
    """Best feasible accuracy so far against wall-clock time, one line per run."""
    curves = [time_progress(r.trials) for r in runs]
    if not any(xs for xs, _ in curves):
        return None
    longest = max((xs[-1] for xs, _ in curves if xs), default=0.0)
    unit, scale = ("h", 3600.0) if longest > 3 * 3600 else \
        ("min", 60.0) if longest > 180 else ("s", 1.0)
    fig = Figure(figsize=_SIZE, layout="constrained")
    ax = _axes(fig, "Best feasible accuracy over time", f"wall-clock time ({unit})")
    for i, (run, (xs, ys)) in enumerate(zip(runs, curves)):
        if xs:
            ax.step([x / scale for x in xs], ys, where="post", linewidth=2,
                    color=PALETTE[i % len(PALETTE)], label=_label(run, runs))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, loc="lower right")
    return fig


_COSTS = {"params": ("parameters", 1.0), "flops": ("MFLOPs", 1e6),
          "avg_flops": ("average MFLOPs per input", 1e6)}


def tradeoff(runs: Sequence[Run], metric: str) -> Figure | None:
    """Accuracy against ``metric`` (``params`` or ``flops``): every scored trial, the
    Pareto front of each run, the constraint's feasible range shaded, the best starred."""
    name, scale = _COSTS[metric]
    points = [[t for t in r.scored if t.metrics.get(metric, 0) > 0] for r in runs]
    if not any(points):
        return None
    fig = Figure(figsize=_SIZE, layout="constrained")
    ax = _axes(fig, f"Accuracy vs {name}", f"{name} (log scale)")
    ax.set_xscale("log")
    # 1-2-5 ticks with plain labels (100k, 2M): powers-of-ten notation is hard to read
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: human(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    legend = [Line2D([], [], color=PALETTE[i % len(PALETTE)], linewidth=2,
                     label=_label(run, runs)) for i, run in enumerate(runs)] \
        if len(runs) > 1 else []
    for i, trials in enumerate(points):
        if not trials:
            continue
        colour = PALETTE[i % len(PALETTE)]
        xy = [(t.metrics[metric] / scale, t.accuracy) for t in trials]
        feasible = [p for p, t in zip(xy, trials) if t.feasible]
        infeasible = [p for p, t in zip(xy, trials) if not t.feasible]
        if feasible:
            ax.scatter(*zip(*feasible), s=16, color=colour, alpha=0.6, linewidths=0)
        if infeasible:
            ax.scatter(*zip(*infeasible), s=16, facecolors="none", edgecolors=colour,
                       alpha=0.6, linewidths=0.8)
        # "post" steps: the best accuracy reachable at a cost of at most x
        ax.step(*zip(*[xy[j] for j in pareto_front(xy)]), where="post", color=colour,
                linewidth=1.5, alpha=0.9)
        if feasible:
            ax.scatter(*max(feasible, key=lambda p: p[1]), marker="*", s=160, color=colour,
                       edgecolors="black", linewidths=0.6, zorder=5)
    grey = "#666666"
    legend += [Line2D([], [], marker="o", color=grey, linestyle="", label="feasible"),
               Line2D([], [], marker="o", markerfacecolor="none", color=grey, linestyle="",
                      label="infeasible"),
               Line2D([], [], color=grey, label="Pareto front"),
               Line2D([], [], marker="*", markersize=11, color=grey, markeredgecolor="black",
                      linestyle="", label="best feasible")]
    allowed = feasible_range(runs[0].objective, metric)
    if allowed is not None:
        low, high = allowed
        left, right = ax.get_xlim()
        ax.axvspan(max(low / scale, left), min(high / scale, right), color="#2ca02c",
                   alpha=0.08, zorder=0)
        for bound in (low, high):
            if 0 < bound < math.inf:
                ax.axvline(bound / scale, color="#2ca02c", linewidth=1, linestyle="--")
        ax.set_xlim(left, right)
        legend.append(Patch(color="#2ca02c", alpha=0.25, label="feasible range"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(handles=legend, fontsize=7.5, loc="lower right")
    return fig


def exits(trial: TrialRecord) -> Figure | None:
    """A multi-exit trial's share of inputs leaving at each exit (bars) and each exit's
    accuracy on every input (line); None for trials without early exit."""
    rows = exit_profile(trial)
    if not rows:
        return None
    fig = Figure(figsize=_SIZE, layout="constrained")
    ax = _axes(fig, f"Exits of trial {trial.id}: early-exit accuracy "
                    f"{100 * (trial.accuracy or 0):.1f}% at "
                    f"{human(trial.metrics['avg_flops'])} FLOPs per input",
               "exit (FLOPs an input leaving there pays)", "share of inputs / accuracy")
    xs = range(len(rows))
    ax.bar(xs, [r["share"] for r in rows], color=PALETTE[0], alpha=0.7,
           label="share of inputs leaving here")
    ax.plot(xs, [r["accuracy"] for r in rows], marker="o", color=PALETTE[1], linewidth=1.6,
            label="exit accuracy on every input")
    ax.set_xticks(list(xs), [f"exit {k}\n{human(r['flops'])}" for k, r in enumerate(rows)])
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, loc="upper left")
    return fig


def episodes(run: Run) -> Figure | None:
    """Feasible share and mean reward per episode (and the policy entropy, when stored)."""
    xlabel, rows = episode_stats(run)
    if not rows:
        return None
    panels = [("feasible_share", "feasible share"), ("mean_reward", "mean reward")]
    if any("entropy" in row for row in rows):
        panels.append(("entropy", "policy entropy (nats)"))
    fig = Figure(figsize=(6.4, 1.9 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle("Per episode" if xlabel == "episode" else "Over the search", fontsize=11,
                 x=0.02, ha="left")
    for ax, (key, label) in zip(axes, panels):
        xs = [row["x"] for row in rows if key in row]
        ys = [row[key] for row in rows if key in row]
        ax.plot(xs, ys, marker="o", markersize=4, color=PALETTE[0], linewidth=1.6)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if key == "feasible_share":
            ax.set_ylim(-0.05, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[-1].set_xlabel(xlabel)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _label(run: Run, runs: Sequence[Run]) -> str:
    text = f"{run.name} ({run.config.strategy})" if len(runs) > 1 else \
        f"best so far ({run.config.strategy})"
    return text if run.summary.feasible else f"{text}: no feasible trial"
