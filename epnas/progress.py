"""Progress of a running study: a rich live panel on a terminal, one line per trial elsewhere.

Both reporters are ``Study(progress=reporter.trial)`` callbacks; the Study itself knows
nothing of terminals.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from epnas.config import StudyConfig
from epnas.evaluators.proxy import accuracy_label, pretext_of
from epnas.store import TrialRecord
from epnas.study import Summary


def human(value: float) -> str:
    """``45123`` -> ``45.1k``, ``2.5e6`` -> ``2.5M``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def metrics_text(metrics: Mapping[str, float], fidelity: str | None = None) -> str:
    """Accuracy in percent and the costs a record has, for one-line displays; the
    accuracy of a pretext ``fidelity`` is marked as the task's."""
    parts = []
    if (acc := metrics.get("accuracy")) is not None:
        task = pretext_of(fidelity)
        parts.append(f"acc {100 * acc:.2f}%" + (f" ({task} pretext)" if task else ""))
    if (params := metrics.get("params")) is not None:
        parts.append(f"params {human(params)}")
    if (flops := metrics.get("flops")) is not None:
        parts.append(f"MFLOPs {flops / 1e6:.3g}")
    if (intensity := metrics.get("intensity")) is not None:
        parts.append(f"intensity {intensity:.3g}")
    if (memory := metrics.get("memory")) is not None:
        parts.append(f"memory {human(memory)}B")
    return "  ".join(parts)


def trial_text(record: TrialRecord) -> str:
    if record.status == "failed":
        error = (record.error or "").splitlines()[0] if record.error else ""
        return f"#{record.id} failed ({record.reason}): {error}"
    source = f" (= #{record.source})" if record.source else ""
    feasible = "feasible" if record.feasible else "infeasible"
    return (f"#{record.id} {record.status}{source}  "
            f"{metrics_text(record.metrics, record.fidelity)}  "
            f"reward {record.reward or 0.0:.4f} {feasible}")


class Reporter:
    """Counts trials and keeps the best feasible one; subclasses display them.

    Trials count when they finish: a trial an interrupted run left queued or running
    counts once, when the resumed run finishes it.

    Args:
        config: the study's config (for the budgets).
        start: the summary when the run (re)starts.
        stream: where to write.
        budget: the trials the run will use (default ``config.trials``; fewer when the
            strategy's own schedule ends first, :meth:`~epnas.study.Study.trial_budget`).
        report_fidelity: the strategy's (EcoNAS's top level, DNA's assembled network):
            once a trial at it has finished, the best is chosen among those only, as the
            run's summary chooses it (a cheap level's or a block's figure is not the
            run's result; when none of them is feasible, there is no feasible best).
    """

    def __init__(self, config: StudyConfig, start: Summary, stream: TextIO, *,
                 budget: int | None = None, report_fidelity: str | None = None) -> None:
        self.config = config
        self.report_fidelity = report_fidelity
        self.stream = stream
        self.total = config.trials if budget is None else budget
        self.trials = start.finished
        self.first = start.finished
        self.best = start.best if start.feasible else None
        self.reported = start.best is not None and self._at_report(start.best)
        self.started = time.monotonic()
        self.elapsed_before = start.elapsed

    def trial(self, record: TrialRecord) -> None:
        self.trials += 1
        done = record.status in ("done", "cached") and record.accuracy is not None
        if done and self._at_report(record) and not self.reported:
            self.reported = True  # from now on only trials at the report fidelity count
            self.best = None
        if record.feasible and (not self.reported or self._at_report(record)) and (
                self.best is None or record.rank > self.best.rank):
            self.best = record
        self.show(record)

    def _at_report(self, record: TrialRecord) -> bool:
        return self.report_fidelity is not None and record.fidelity == self.report_fidelity

    def show(self, record: TrialRecord) -> None:
        """Display one new trial."""

    def epoch(self, trial_id: int, epoch: int, epochs: int,
              figures: Mapping[str, float]) -> None:
        """A running trial ended an epoch (``Study.trial_progress``); shown live only."""

    def budget(self) -> str:
        total = "" if self.total is None else f"/{self.total}"
        return f"{self.trials}{total}"

    def eta(self) -> str | None:
        """Remaining time by the trial rate of this session, or by the time budget."""
        session = time.monotonic() - self.started
        candidates = []
        done = self.trials - self.first
        if self.total is not None and done > 0:
            candidates.append((self.total - self.trials) * session / done)
        if self.config.time is not None:
            candidates.append(self.config.time - self.elapsed_before - session)
        return duration(max(0.0, min(candidates))) if candidates else None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class LineReporter(Reporter):
    """One line per trial: for logs, pipes and ``--quiet``."""

    def show(self, record: TrialRecord) -> None:
        best = (f"  best #{self.best.id} {100 * (self.best.accuracy or 0):.2f}%"
                if self.best is not None else "")
        self.stream.write(f"[{self.budget()}] {trial_text(record)}{best}\n")
        self.stream.flush()


class LiveReporter(Reporter):
    """A live panel: budget, episode and step, best feasible, throughput, ETA, last trials."""

    def __init__(self, config: StudyConfig, start: Summary, stream: TextIO,
                 run_dir: str | None, *, budget: int | None = None,
                 report_fidelity: str | None = None) -> None:
        super().__init__(config, start, stream, budget=budget, report_fidelity=report_fidelity)
        self.run_dir = run_dir
        self.recent: deque[TrialRecord] = deque(maxlen=6)
        self.info: Mapping[str, Any] = {}
        # trial id -> how far it trained; replaced, never changed in place, since the
        # refresh thread reads it
        self.running: Mapping[int, str] = {}
        # Live re-renders `self` (see __rich__) on every refresh, so the clock and the ETA
        # move while a long trial trains.
        self.live = Live(self, console=Console(file=stream), refresh_per_second=2)

    def __enter__(self) -> LiveReporter:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def show(self, record: TrialRecord) -> None:
        self.running = {k: v for k, v in self.running.items() if k != record.id}
        self.recent.append(record)
        self.info = record.info
        self.live.refresh()

    def epoch(self, trial_id: int, epoch: int, epochs: int,
              figures: Mapping[str, float]) -> None:
        accuracy = figures.get("accuracy", figures.get("train_accuracy"))
        what = "acc" if "accuracy" in figures else "train acc"
        so_far = f" {what} {100 * accuracy:.2f}%" if accuracy is not None else ""
        self.running = {**self.running, trial_id: f"#{trial_id} epoch {epoch}/{epochs}{so_far}"}
        self.live.refresh()

    def __rich__(self) -> Group:
        session = time.monotonic() - self.started
        rate = (self.trials - self.first) / session * 60 if session > 0 else 0.0
        head = [f"trials {self.budget()}"]
        if "episode" in self.info:
            head.append(f"episode {self.info['episode']} step {self.info.get('step', '-')}")
        head.append(f"elapsed {duration(self.elapsed_before + session)}")
        head.append(f"{rate:.1f} trials/min")
        if (eta := self.eta()) is not None:
            head.append(f"ETA {eta}")
        best = (f"best feasible #{self.best.id}  "
                f"{metrics_text(self.best.metrics, self.best.fidelity)}"
                if self.best is not None else "no feasible architecture yet")
        table = Table(box=None, pad_edge=False)
        accuracy = accuracy_label(self.config.fidelity)
        for column in ("#", "status", accuracy, "params", "MFLOPs", "reward"):
            table.add_column(column, justify="right")
        for r in tuple(self.recent):  # the refresh thread renders while trials arrive
            table.add_row(str(r.id), r.status if r.status != "failed" else f"failed:{r.reason}",
                          "" if r.accuracy is None else f"{100 * r.accuracy:.2f}%",
                          human(r.metrics["params"]) if "params" in r.metrics else "",
                          f"{r.metrics['flops'] / 1e6:.3g}" if "flops" in r.metrics else "",
                          f"{r.reward or 0.0:.4f}")
        where = Text(f"run: {self.run_dir}", style="dim") if self.run_dir else Text("")
        lines = [Text("  ".join(head), style="bold"), Text(best)]
        if running := self.running:
            lines.append(Text("training: " + "  ".join(running[k] for k in sorted(running))))
        return Group(*lines, table, where)
