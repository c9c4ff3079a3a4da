"""Dynamic inference on a once-for-all supernet (ENAS4D): any ``multistage`` genome is a
sub-network of a trained supernet, measured with early exits and no training.

For a genome the evaluator slices its static network from the supernet
(:meth:`~epnas.supernet.Supernet.subnet`), re-estimates BatchNorm statistics on
``calibration_batches`` training batches (:func:`~epnas.supernet.recalibrate`), runs the
validation set through every exit once and simulates early exit: an input leaves at the
first exit whose confidence passes that exit's threshold (the last exit takes the rest).
Confidence is the largest softmax probability (``max_softmax``: leave when it is at
least the threshold) or the prediction's entropy (``entropy``: leave when it is at most
the threshold).

Metrics: ``accuracy`` (dynamic, at the chosen thresholds), ``avg_flops`` (the mean over
inputs of the FLOPs each paid: ``sum_k share_k * exit_costs[k].flops``, where exit ``k``'s
cost counts the stem, stages ``0..k`` and exit heads ``0..k``), ``static_accuracy`` (the
last exit on every input), ``static_flops`` (the static network's: the last exit's
path without the earlier exit heads), and per exit ``k``: ``exit{k}_accuracy`` (exit ``k`` on every
input), ``exit{k}_share`` (the share of inputs leaving there), ``exit{k}_flops``; and per
exit but the last ``threshold{k}``. The analytic costs (``params``, ``flops``, ...) are
those of the whole network with every exit.

Thresholds: given ones (``thresholds``, one per exit but the last) are used as they are.
Otherwise they are chosen per network on the validation set: first one threshold shared
by every exit, swept over a grid of confidence quantiles, then each exit's threshold in
turn over its own quantiles (two rounds of coordinate search), keeping the setting with
the highest accuracy among those with ``avg_flops`` at most the cap (ties: fewer
``avg_flops``). The cap is the upper bound of the study's ``avg_flops`` constraint (or
``max_avg_flops``). Without a cap the rule is the same with every setting allowed: an
input goes to an earlier exit only where that costs no accuracy. When no setting meets
the cap, every input leaves at the first exit (the cheapest; the study's soft penalty
then scores the violation).

Fidelities: it trains nothing, so of EcoNAS's reduced settings only the sample share
``s`` applies: ``s=0.25`` rates on a seeded random quarter of the validation set (the same
images for every genome of a study), thresholds chosen there too; ``full`` (or none) on
all of it. ``c``, ``r``, ``e`` and a base schedule are refused before the study starts.

In a study with a run directory each trial leaves its sliced, recalibrated network's
``state_dict`` in ``trials/<id>/model.pt`` (as the training evaluator does), which
``epnas export`` and ``epnas retrain`` start from; its thresholds are in its metrics.

Before evaluation (filters, EPNAS's feasibility prediction) :meth:`costs` gives
``avg_flops`` as its lower bound, exit 0's cost (what every input pays at least), so a
filter ``max-avg_flops=X`` only rejects networks that no thresholds can bring under X.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from epnas.costmodel import Tally
from epnas.data import Dataset, load
from epnas.errors import EpnasError
from epnas.evaluators.base import Evaluator
from epnas.evaluators.proxy import Setting
from epnas.evaluators.training import MODEL_FILE, save_weights
from epnas.objective import Constraint
from epnas.spaces.base import Space
from epnas.spaces.genome import Genome
from epnas.spaces.multistage.genome import MultistageGenome, MultistageOptions
from epnas.spaces.registry import cost, space_of
from epnas.supernet import Supernet, load_supernet, recalibrate
from epnas.supernet.training import calibration, exit_logits, read_meta
from epnas.trial import Candidate, Result, TrialContext

CRITERIA = ("max_softmax", "entropy")
GRID = 64  # confidence quantiles per threshold search
ROUNDS = 2  # rounds of per-exit coordinate search


def confidences(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """``[exits, N]`` scores where higher is more confident: the largest softmax
    probability, or the negated entropy (nats)."""
    logp = F.log_softmax(logits.float(), -1)
    if criterion == "max_softmax":
        return logp.exp().amax(-1)
    return (logp.exp() * logp).sum(-1)  # -entropy


def early_exit(conf: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """The exit each input leaves at: the first ``k`` with ``conf[k] >= taus[k]``
    (the last exit when none)."""
    exits = len(conf)
    leave = np.full(conf.shape[1], exits - 1)
    for k in reversed(range(exits - 1)):
        leave = np.where(conf[k] >= taus[k], k, leave)
    return leave


class Outcome:
    """Accuracy, average FLOPs and exit shares of thresholds on fixed exit outputs."""

    def __init__(self, conf: np.ndarray, correct: np.ndarray, flops: Sequence[float]) -> None:
        self.conf, self.correct, self.flops = conf, correct, np.asarray(flops, dtype=float)

    @classmethod
    def of(cls, logits: torch.Tensor, labels: torch.Tensor, criterion: str,
           flops: Sequence[float]) -> Outcome:
        """The simulator of every exit's ``[exits, N, classes]`` logits on labelled inputs."""
        correct = (logits.argmax(-1) == labels.to(logits.device)[None]).cpu().numpy()
        return cls(confidences(logits, criterion).cpu().numpy(), correct, flops)

    def __call__(self, taus: Sequence[float]) -> tuple[float, float, np.ndarray]:
        leave = early_exit(self.conf, taus)
        share = np.bincount(leave, minlength=len(self.conf)) / max(len(leave), 1)
        accuracy = float(self.correct[leave, np.arange(len(leave))].mean())
        return accuracy, float(share @ self.flops), share

    def choose(self, cap: float | None) -> list[float]:
        """Thresholds maximising accuracy with ``avg_flops <= cap`` (see the module)."""
        exits = len(self.conf)
        if exits == 1:
            return []
        grids = [np.unique(np.quantile(c, np.linspace(0, 1, GRID))) for c in self.conf]

        def score(taus: list[float]) -> tuple[bool, float, float]:
            accuracy, flops, _ = self(taus)
            return (cap is None or flops <= cap * (1 + 1e-9), accuracy, -flops)

        # finite thresholds past every confidence (never leave) or at the lowest (always)
        never = [float(c.max()) + 1.0 for c in self.conf[:-1]]
        best, best_score = never, score(never)
        shared = np.unique(np.concatenate(grids[:-1]))
        for t in shared:
            taus = [float(t)] * (exits - 1)
            if (s := score(taus)) > best_score:
                best, best_score = taus, s
        for _ in range(ROUNDS):
            for k in range(exits - 1):
                for t in [*grids[k], never[k]]:
                    taus = [*best[:k], float(t), *best[k + 1:]]
                    if (s := score(taus)) > best_score:
                        best, best_score = taus, s
        if not best_score[0]:  # nothing meets the cap: the cheapest setting
            best = [float(c.min()) for c in self.conf[:-1]]
        return best


class SupernetEvaluator(Evaluator):
    """Sub-networks of a trained supernet, measured with early exit (ENAS4D).

    Args:
        path: the supernet directory (``epnas supernet train --out DIR``).
        criterion: ``max_softmax`` or ``entropy``.
        thresholds: one per exit but the last (entropies for ``entropy``); None:
            chosen per network (see the module).
        calibration_batches: training batches that re-estimate BatchNorm statistics.
        batch_size: images per calibration batch.
        max_avg_flops: a cap on ``avg_flops`` for choosing thresholds (the study's
            ``avg_flops`` constraint's upper bound when it has one).
        constraints: the study's constraints (``METRIC:LOW:HIGH[:PENALTY]``).
        dataset, data: the data set (default: the supernet's) and its files.
        device: where the sub-networks run (None: CUDA when available).
        seed: draws the validation share a fidelity ``s=...`` rates on.
    """

    fidelities: ClassVar[tuple[str, ...]] = ()
    path_options: ClassVar[tuple[str, ...]] = ("path", "data")

    def __init__(self, path: str, criterion: str = "max_softmax",
                 thresholds: Sequence[float] | None = None, calibration_batches: int = 4,
                 batch_size: int = 128, max_avg_flops: float | None = None,
                 constraints: Sequence[str] | None = None, dataset: str | None = None,
                 data: str | None = None, device: str | None = None, seed: int = 0) -> None:
        self.path, self.meta = str(path), read_meta(path)
        if criterion not in CRITERIA:
            raise EpnasError(f"supernet evaluator: criterion must be one of "
                             f"{', '.join(CRITERIA)}, got {criterion!r}")
        if dataset is not None and dataset.lower().replace("_", "-") != self.meta["dataset"]:
            raise EpnasError(f"supernet evaluator: the supernet in {path} was trained on "
                             f"{self.meta['dataset']}, not {dataset}")
        self.exits = len(self.meta["space_options"]["widths"])
        if thresholds is not None:
            thresholds = [float(t) for t in (thresholds if isinstance(thresholds, Sequence)
                                             else [thresholds])]
            if len(thresholds) != self.exits - 1:
                raise EpnasError(f"supernet evaluator: thresholds needs {self.exits - 1} values "
                                 f"(one per exit but the last), got {len(thresholds)}")
        if calibration_batches < 1 or batch_size < 1:
            raise EpnasError("supernet evaluator: calibration_batches and batch_size must be "
                             "at least 1")
        caps = [c.high for c in map(Constraint.parse, constraints or ())
                if c.metric == "avg_flops" and c.high is not None]
        if max_avg_flops is not None:
            caps.append(float(max_avg_flops))
        self.cap = min(caps) if caps else None
        self.criterion, self.thresholds, self.seed = criterion, thresholds, seed
        self.calibration_batches, self.batch_size = calibration_batches, batch_size
        self.data = data if data is not None else self.meta["data"]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.input_shape = tuple(self.meta["input_shape"])  # type: ignore[assignment]
        self.num_classes = int(self.meta["num_classes"])
        per_exit = [f"exit{k}_{m}" for k in range(self.exits)
                    for m in ("accuracy", "share", "flops")]
        self.metrics = ("accuracy", "avg_flops", "static_accuracy", "static_flops", *per_exit,
                        *(f"threshold{k}" for k in range(self.exits - 1)))
        self._loaded: tuple[Supernet, Dataset, list[torch.Tensor]] | None = None

    def prepare(self) -> None:
        """Load the supernet and its data set (errors before the first trial)."""
        _ = self.loaded

    @property
    def loaded(self) -> tuple[Supernet, Dataset, list[torch.Tensor]]:
        """The supernet, the data set and the calibration batches (once per process)."""
        if self._loaded is None:
            supernet, _ = load_supernet(self.path, self.device)
            data = load(self.meta["dataset"], self.data)
            batches = calibration(data, self.calibration_batches, self.batch_size, 0, self.device)
            self._loaded = (supernet, data, batches)
        return self._loaded

    def rated_space(self) -> tuple[str, dict[str, Any]]:
        """``multistage`` with the options the supernet was trained with."""
        return "multistage", MultistageOptions(**self.meta["space_options"]).model_dump(
            mode="json")

    def check_space(self, space: Space) -> None:
        """The study's space must be the supernet's: ``multistage`` with the options it was
        trained with (the error lists the ``--space-opt`` flags that give them)."""
        trained = MultistageOptions(**self.meta["space_options"])
        options = getattr(space, "options", None)
        if isinstance(options, MultistageOptions) and options == trained:
            return
        wanted = trained.model_dump()
        given = options.model_dump() if isinstance(options, MultistageOptions) else {}
        flags = " ".join(f"--space-opt {k}={flag_value(v)}" for k, v in wanted.items()
                         if given.get(k) != v)
        raise EpnasError(f"the supernet in {self.path} rates the multistage space it was "
                         f"trained for: give --space multistage {flags}".rstrip()
                         + " (or no --space-opt at all: the supernet's own are used)")

    def check_fidelity(self, fidelity: str) -> None:
        """Only EcoNAS's sample share ``s`` (of the validation set), or ``full``."""
        self.share(fidelity)

    def share(self, fidelity: str | None) -> float:
        """The share of the validation set ``fidelity`` rates on (see the module)."""
        if fidelity is None:
            return 1.0
        setting = Setting.parse(fidelity)
        if setting != Setting(s=setting.s):
            raise EpnasError(f"supernet evaluator: fidelity {fidelity!r}: it trains nothing, "
                             "so of the EcoNAS settings only s (the share of the validation "
                             "set it rates on) applies, as in EcoNAS levels=s=0.25,full")
        return setting.s

    def _check(self, genome: Genome) -> MultistageGenome:
        supernet = self.loaded[0]
        if not isinstance(genome, MultistageGenome) or genome.options != supernet.options:
            raise EpnasError("the genome is not of the supernet's space: give epnas search "
                             "the space options the supernet was trained with (--space-opt "
                             f"as in {self.path}/supernet.json)")
        space_of(genome).validate(genome)
        return genome

    def exit_flops(self, genome: Genome) -> list[float]:
        """The FLOPs an input pays when it leaves at each exit."""
        return [c.flops for c in space_of(genome).exit_costs(  # type: ignore[attr-defined]
            genome, self.input_shape, self.num_classes)]

    def static_flops(self, genome: Genome) -> float:
        """The FLOPs of the static network: the last exit's path without the earlier
        exit heads."""
        space = space_of(genome)
        heads = Tally()
        for shape in space.stage_shapes(genome)[1:-1]:  # type: ignore[attr-defined]
            space.tally_exit(heads, shape, self.num_classes)  # type: ignore[attr-defined]
        return self.exit_flops(genome)[-1] - heads.result().flops

    def costs(self, genome: Genome) -> dict[str, float]:
        """The analytic costs, ``static_flops``, and ``avg_flops`` at its lower bound (exit
        0's cost)."""
        costs = cost(genome, self.input_shape, self.num_classes).as_dict()
        return {**costs, "avg_flops": self.exit_flops(genome)[0],
                "static_flops": self.static_flops(genome)}

    def network(self, genome: MultistageGenome) -> torch.nn.Module:
        """``genome``'s network sliced from the supernet, BatchNorm recalibrated."""
        supernet, _, batches = self.loaded
        return recalibrate(supernet.subnet(genome), batches)

    def outcome(self, genome: MultistageGenome, net: torch.nn.Module | None = None,
                share: float = 1.0) -> tuple[Outcome, np.ndarray]:
        """The early-exit simulator of ``genome`` (its :meth:`network` unless given) on the
        validation set (a seeded random ``share`` of it), and each exit's accuracy on
        every input."""
        data = self.loaded[1]
        net = self.network(genome) if net is None else net
        images, labels = data.val_x, data.val_y
        if share < 1.0:
            count = max(1, round(share * len(labels)))
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(
                self.seed))[:count].sort().values
            images, labels = images[keep], labels[keep]
        simulate = Outcome.of(exit_logits(net, images, data), labels, self.criterion,
                              self.exit_flops(genome))
        return simulate, simulate.correct.mean(1)

    def evaluate(self, candidate: Candidate) -> Result:
        return self.evaluate_trial(candidate, TrialContext())

    def evaluate_trial(self, candidate: Candidate, context: TrialContext) -> Result:
        try:
            genome = self._check(candidate.genome)
            share = self.share(candidate.fidelity)
        except EpnasError as exc:
            return Result.failure("error", str(exc))
        net = self.network(genome)
        simulate, exit_accuracy = self.outcome(genome, net, share)
        if context.directory:  # what export and retrain start from
            save_weights(net, Path(context.directory) / MODEL_FILE)
        if self.thresholds is not None:
            taus = self.thresholds if self.criterion == "max_softmax" else \
                [-t for t in self.thresholds]
        else:
            taus = simulate.choose(self.cap)
        accuracy, avg_flops, share = simulate(taus)
        metrics = {**cost(genome, self.input_shape, self.num_classes).as_dict(),
                   "accuracy": accuracy, "avg_flops": avg_flops,
                   "static_accuracy": float(exit_accuracy[-1]),
                   "static_flops": self.static_flops(genome)}
        for k in range(self.exits):
            metrics.update({f"exit{k}_accuracy": float(exit_accuracy[k]),
                            f"exit{k}_share": float(share[k]),
                            f"exit{k}_flops": float(simulate.flops[k])})
        for k, t in enumerate(taus):
            metrics[f"threshold{k}"] = t if self.criterion == "max_softmax" else -t
        return Result("done", metrics)


def flag_value(value: Any) -> str:
    """An option value as ``--space-opt`` takes it (tuples comma-separated)."""
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
