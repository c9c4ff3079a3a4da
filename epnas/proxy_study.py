"""``epnas proxy-study``: does a cheap training setting rank architectures like a reference?

EcoNAS's rank-consistency study: sample architectures in a FLOPs range, train each
under a proxy setting and a reference setting (fidelity strings of
:mod:`epnas.evaluators.proxy`), and compare the two rankings by Kendall's tau and
Spearman's rho. Every training result is cached in ``OUT/results/`` under the genome
key and a digest of everything that determines it (data set, seed, resolved
schedule), so a rerun, or a run after an interruption, trains only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epnas.errors import EpnasError
from epnas.evaluators.proxy import Setting
from epnas.evaluators.training import TrainingEvaluator
from epnas.flags import add_mflops_range, parse_options, sampling_options
from epnas.spaces.genome import Genome
from epnas.spaces.registry import cost
from epnas.spaces.registry import get as get_space
from epnas.trial import Candidate

__all__ = ["Measurement", "add_command", "measure", "rank_consistency", "sample_genomes",
           "scatter_plot"]


@dataclass(frozen=True)
class Measurement:
    """One genome trained under one setting (from the cache or just now)."""

    genome: Genome
    setting: str
    status: str
    metrics: dict[str, float]
    cached: bool

    @property
    def accuracy(self) -> float | None:
        """Validation accuracy, or None when the training failed."""
        return self.metrics.get("accuracy") if self.status == "done" else None


def sample_genomes(space: Any, n: int, seed: int) -> list[Genome]:
    """``n`` distinct random genomes (``space.sample`` applies its FLOPs cap)."""
    rng = np.random.default_rng(seed)
    genomes: dict[str, Genome] = {}
    for _ in range(100 * n):
        genome = space.sample(rng)
        genomes.setdefault(genome.key, genome)
        if len(genomes) == n:
            return list(genomes.values())
    raise EpnasError(f"only {len(genomes)} distinct {space.name} genomes in {100 * n} draws; "
                     "ask for fewer --archs or widen the space")


def _identity(evaluator: TrainingEvaluator, genome: Genome, setting: Setting) -> dict[str, Any]:
    """Everything that determines a training result (a data set passed in as a
    :class:`Dataset`, perhaps a subset, by its images' fingerprint)."""
    given = evaluator.given_data
    return {"genome": genome.key, "setting": str(setting), "dataset": evaluator.dataset,
            "data": evaluator.data if given is None else given.fingerprint,
            "seed": evaluator.seed,
            "val_fraction": evaluator.val_fraction,
            "schedule": evaluator.schedule(str(setting)).model_dump(mode="json")}


def measure(evaluator: TrainingEvaluator, genomes: Sequence[Genome], fidelity: str,
            cache_dir: str | Path, progress: Callable[[int, Measurement], None] | None = None,
            train: Callable[[int], bool] = lambda index: True) -> list[Measurement | None]:
    """Train every genome under ``fidelity``, answering from the cache where it can.

    Args:
        evaluator: Trains the genomes (its data set, seed and schedule overrides are
            part of the cache identity).
        genomes: The architectures.
        fidelity: A fidelity string, e.g. ``"c=0.25,r=0.5,s=0.5,e=5"`` or ``"full"``.
        cache_dir: Directory of the per-(genome, setting) JSON results.
        progress: Called after each genome with its index (from 0) and measurement.
        train: Which genomes (by index) to train when they are not cached; the others
            are None unless cached (to split the work over processes).

    Returns:
        One measurement per genome, in order.
    """
    setting = Setting.parse(fidelity)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for index, genome in enumerate(genomes):
        identity = _identity(evaluator, genome, setting)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        path = cache / f"{genome.key}-{digest[:12]}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            m = Measurement(genome, str(setting), stored["status"], stored["metrics"], True)
        elif not train(index):
            out.append(None)
            continue
        else:
            cpu = time.process_time()
            result = evaluator.evaluate(Candidate(genome, str(setting)))
            # CPU time, unlike wall time, hardly depends on what else the machine runs
            metrics = {**result.metrics, "cpu_seconds": time.process_time() - cpu}
            m = Measurement(genome, str(setting), result.status, metrics, False)
            record = {**identity, "status": m.status, "reason": result.reason,
                      "error": result.error,
                      "metrics": m.metrics, "genome_json": genome.to_dict()}
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: a kill leaves no half file
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)
        out.append(m)
        if progress is not None:
            progress(index, m)
    return out


def rank_consistency(proxy: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho (with p-values) of two accuracy lists."""
    from scipy import stats

    if len(proxy) < 2:
        return {"kendall_tau": math.nan, "kendall_p": math.nan,
                "spearman_rho": math.nan, "spearman_p": math.nan}
    tau = stats.kendalltau(proxy, reference)
    rho = stats.spearmanr(proxy, reference)
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}


def scatter_plot(path: str | Path, proxy: Sequence[float], reference: Sequence[float],
                 proxy_label: str, reference_label: str, title: str) -> None:
    """A PNG of reference against proxy accuracy (percent), one point per architecture."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    ax.scatter([100 * a for a in proxy], [100 * a for a in reference], s=24)
    ax.set_xlabel(f"proxy accuracy % ({proxy_label})")
    ax.set_ylabel(f"reference accuracy % ({reference_label})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cmd_proxy_study(args: argparse.Namespace) -> int:
    from rich.console import Console

    proxy, reference = Setting.parse(args.proxy), Setting.parse(args.reference)
    evaluator = TrainingEvaluator(args.dataset, args.data, seed=args.seed,
                                  schedule=parse_options(args.schedule_opt, "--schedule-opt"),
                                  device=args.device)
    data = evaluator.loaded
    for setting in (proxy, reference):  # e.g. colorization of greyscale images: one line now
        evaluator.check_fidelity(str(setting))
    options = parse_options(args.space_opt, "--space-opt")
    # The range applies at the data set's input shape.
    options.update(sampling_options(args, data.input_shape, data.num_classes))
    space = get_space(args.space, **options)
    genomes = sample_genomes(space, args.archs, args.seed)
    out = Path(args.out or f"runs/proxy-study-{data.name}-{space.name}")
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=args.json == "-", highlight=False)
    console.print(f"proxy study: {len(genomes)} {space.name} architectures on {data.name}, "
                  f"proxy {proxy} vs reference {reference}; results in {out}")

    def progress(label: str) -> Callable[[int, Measurement], None]:
        def report(index: int, m: Measurement) -> None:
            acc = "failed" if m.accuracy is None else f"{100 * m.accuracy:.2f}%"
            how = "cached" if m.cached else f"{m.metrics.get('train_seconds', 0.0):.1f}s"
            console.print(f"[{index + 1}/{len(genomes)}] {label} {m.genome.key}  {acc}  {how}")
        return report

    cheap = measure(evaluator, genomes, str(proxy), out / "results", progress("proxy"))
    full = measure(evaluator, genomes, str(reference), out / "results", progress("reference"))
    report = summarize(genomes, cheap, full, data.input_shape, data.num_classes)
    report.update(dataset=data.name, space=space.name, proxy=str(proxy),
                  reference=str(reference))
    (out / "pairs.json").write_text(json.dumps(report, indent=1))
    ok = [p for p in report["pairs"] if p["proxy_accuracy"] is not None
          and p["reference_accuracy"] is not None]
    scatter_plot(out / "scatter.png", [p["proxy_accuracy"] for p in ok],
                 [p["reference_accuracy"] for p in ok], str(proxy), str(reference),
                 f"{data.name}, {len(ok)} {space.name} architectures: Kendall tau "
                 f"{report['kendall_tau']:.2f}, Spearman rho {report['spearman_rho']:.2f}")
    if args.json:
        text = json.dumps(report) + "\n"
        if args.json == "-":
            print(text, end="")
        else:
            Path(args.json).write_text(text)
    console.print(f"Kendall tau {report['kendall_tau']:.3f} (p {report['kendall_p']:.2g}), "
                  f"Spearman rho {report['spearman_rho']:.3f} (p {report['spearman_p']:.2g}) "
                  f"over {len(ok)} architectures ({report['failed']} failed)")
    console.print(f"training time: proxy {report['proxy_train_seconds']:.1f}s, reference "
                  f"{report['reference_train_seconds']:.1f}s ({report['time_ratio']:.1f}x; "
                  f"CPU time {report['cpu_ratio']:.1f}x)")
    console.print(f"wrote {out / 'pairs.json'} and {out / 'scatter.png'}")
    return 0


def summarize(genomes: Sequence[Genome], proxy: Sequence[Measurement],
              reference: Sequence[Measurement], input_shape: tuple[int, int, int],
              num_classes: int) -> dict[str, Any]:
    """The pairs, their rank consistency and the summed training times, as JSON data.

    Pairs with a failed training on either side are listed but left out of the
    correlations and times. ``time_ratio`` divides wall times, ``cpu_ratio`` the
    process CPU times (the fairer figure on a busy machine).
    """
    pairs = []
    for genome, p, r in zip(genomes, proxy, reference):
        c = cost(genome, input_shape, num_classes)
        pair = {"key": genome.key, "params": c.params, "mflops": c.mflops}
        for side, m in (("proxy", p), ("reference", r)):
            pair[f"{side}_accuracy"] = m.accuracy
            for what in ("train_seconds", "cpu_seconds", "images_per_second"):
                pair[f"{side}_{what}"] = m.metrics.get(what)
        pairs.append({**pair, "genome": genome.to_dict()})
    ok = [p for p in pairs if p["proxy_accuracy"] is not None
          and p["reference_accuracy"] is not None]
    totals = {f"{side}_{what}": sum(p[f"{side}_{what}"] or 0.0 for p in ok)
              for side in ("proxy", "reference") for what in ("train_seconds", "cpu_seconds")}

    def ratio(what: str) -> float:
        cheap = totals[f"proxy_{what}"]
        return totals[f"reference_{what}"] / cheap if cheap else math.nan

    return {**rank_consistency([p["proxy_accuracy"] for p in ok],
                               [p["reference_accuracy"] for p in ok]),
            "archs": len(pairs), "failed": len(pairs) - len(ok), **totals,
            "time_ratio": ratio("train_seconds"), "cpu_ratio": ratio("cpu_seconds"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "pairs": pairs}


def add_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``epnas proxy-study``."""
    p = sub.add_parser(
        "proxy-study", help="rank consistency of a reduced training setting (EcoNAS)",
        description="Train sampled architectures under a proxy and a reference setting and "
                    "compare the rankings (Kendall tau, Spearman rho). Results are cached "
                    "in --out: rerunning trains only what is missing.")
    p.add_argument("--dataset", default="digits", help="data set (default digits)")
    p.add_argument("--data", metavar="PATH", help="where the data set's files are")
    p.add_argument("--space", default="layerwise", help="space (default layerwise)")
    p.add_argument("--space-opt", action="append", metavar="KEY=VALUE",
                   help="space option (repeatable)")
    add_mflops_range(p, "the data's input shape")
    p.add_argument("--archs", type=int, default=20, help="architectures (default 20)")
    p.add_argument("--proxy", default="c=0.25,r=0.5,s=0.5,e=5",
                   help="the cheap setting (default c=0.25,r=0.5,s=0.5,e=5)")
    p.add_argument("--reference", default="full", help="the setting it should agree with "
                                                        "(default full)")
    p.add_argument("--schedule-opt", action="append", metavar="KEY=VALUE",
                   help="schedule field for both settings, e.g. precision=fp32 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--out", metavar="DIR",
                   help="results, pairs.json and scatter.png "
                        "(default runs/proxy-study-<dataset>-<space>)")
    json_flag(p)
    p.set_defaults(func=cmd_proxy_study)
