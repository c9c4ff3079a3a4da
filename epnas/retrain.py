"""Final retraining of a searched architecture: ``epnas retrain RUN_DIR``.

The chosen trial's genome is trained from scratch with the ``full`` schedule (Nesterov
SGD, cosine decay, crop/flip/brightness/contrast and Cutout) on training + validation
data, and measured once on the test set at the end. Everything goes to ``RUN_DIR/final/``:

* ``model.pt``: the trained ``state_dict`` (``torch.load(weights_only=True)``);
* ``genome.json``: the architecture (a ``--genome FILE``);
* ``metrics.json``: test accuracy, the schedule, per-epoch history and what a deployer
  needs (input shape, normalisation mean/std, class names); written last, so its
  presence means the retraining is complete;
* ``checkpoint.pt``: the training state after every epoch, while training. Running the
  same command again continues after the last finished epoch (the result is the same
  as without the interruption) and deletes it at the end.

The normalisation is that of the search's training split, so trial weights and the
retrained model take the same inputs.

The assembled network of a DNA search (``--strategy dna``) can start from its parts'
distilled weights instead (``--init parts``), as the ``distill`` evaluator's ``init=parts``
starts its end-to-end trial: every block from the part the search chose for it (the
block trials' ``part-K-KEY.pt`` files in the run's trial directories), the head fresh.

A trial of a supernet search (``--evaluator supernet``) is fine-tuned instead of trained
from scratch: from the sub-network its trial kept (sliced from the supernet, BatchNorm
recalibrated), at the supernet's ``shrink_lr`` unless ``--schedule-opt lr=...`` says
otherwise, with the loss averaged over every exit as the supernet was trained.
``metrics.json`` then adds each exit's test accuracy (``exit_accuracy``) and, with early
exit at the trial's thresholds, ``early_exit_accuracy``, ``avg_flops`` and
``exit_shares``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from epnas.data import Dataset, load
from epnas.errors import EpnasError, storage_errors, validation_message
from epnas.evaluators.distill import find_part, load_parts, part_file
from epnas.evaluators.supernet import Outcome
from epnas.flags import emit_json, parse_options
from epnas.runs import (
    FINAL_DIR,
    FINAL_METRICS,
    FINAL_WEIGHTS,
    Run,
    add_trial_arguments,
    load_run,
    load_state,
    trial_weights_path,
)
from epnas.spaces.registry import build, cost, space_of
from epnas.store import RunLock, TrialRecord
from epnas.supernet.training import exit_logits
from epnas.train import schedules, train
from epnas.train.sharing import save_atomic, write_atomic
from epnas.train.trainer import Progress
from epnas.trialfiles import TRIALS_DIR

CHECKPOINT = "checkpoint.pt"
GENOME = "genome.json"


@dataclass(frozen=True)
class Retraining:
    """What :func:`plan` chose: the trial, its data and schedule; :meth:`fit` trains it."""

    run: Run
    trial: TrialRecord
    data: Dataset
    schedule: schedules.Schedule
    seed: int = 0
    warm: Path | None = None  # fine-tune from these weights (a supernet run's trial)
    parts: tuple[Path, ...] = ()  # start every block from these parts (a dna run's assembly)

    @property
    def settings(self) -> dict[str, Any]:
        """What defines the result; a checkpoint resumes only under the same settings."""
        return {"trial": self.trial.id, "key": self.trial.key, "dataset": self.data.name,
                "seed": self.seed, "schedule": self.schedule.model_dump(mode="json"),
                "init": str(self.warm) if self.warm is not None else (
                    "parts" if self.parts else None)}

    def exit_metrics(self, net: nn.Module) -> dict[str, Any]:
        """Test accuracy of every exit, and with early exit at the trial's thresholds
        (``early_exit_accuracy``, ``avg_flops``, ``exit_shares``)."""
        rule = self.run.early_exit(self.trial.id)
        genome, data = self.trial.genome, self.data
        flops = [c.flops for c in space_of(genome).exit_costs(  # type: ignore[attr-defined]
            genome, data.input_shape, data.num_classes)]
        criterion = rule.get("criterion", "max_softmax")
        simulate = Outcome.of(exit_logits(net, data.test_x, data), data.test_y, criterion, flops)
        metrics: dict[str, Any] = {"exit_accuracy": simulate.correct.mean(1).tolist()}
        if rule:
            taus = rule["thresholds"]
            accuracy, avg_flops, share = simulate(
                taus if criterion == "max_softmax" else [-t for t in taus])
            metrics.update(early_exit_accuracy=accuracy, avg_flops=avg_flops,
                           exit_shares=share.tolist(), **rule)
        return metrics

    @property
    def final(self) -> Path:
        return self.run.path / FINAL_DIR

    def fit(self, *, device: str | None = None, force_new: bool = False,
             progress: Progress | None = None,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train (or resume, or find done) into ``final/``; the metrics written there.

        Args:
            device: ``cpu``, ``cuda``, ... (None: CUDA when available).
            force_new: set aside what ``final/`` holds (to ``final-replaced-<time>/``)
                and start over, instead of refusing other settings or resuming.
            progress: called after every epoch, as in :func:`~epnas.train.train`.
            notice: told in one line when it resumes or finds the work done.

        Raises:
            EpnasError: ``final/`` holds a retraining with other settings (and not
                ``force_new``), or training diverged.
            StorageError: ``final/`` cannot be written (read-only, full, no permission):
                one line, ``storage error: PATH: CAUSE``.
        """
        with storage_errors(self.final):
            return self._fit(device, force_new, progress, notice)

    def _fit(self, device: str | None, force_new: bool, progress: Progress | None,
             notice: Callable[[str], None] | None) -> dict[str, Any]:
        tell = notice or (lambda _: None)
        final, settings = self.final, self.settings
        final.mkdir(parents=True, exist_ok=True)
        lock = RunLock(final)
        try:
            previous = _stored_settings(final)
            if previous is not None and (force_new or previous != settings):
                if not force_new:
                    raise EpnasError(
                        f"{final} holds a retraining with other settings ("
                        f"{_diff(previous, settings)}); repeat them, or add --force-new to "
                        "set it aside and start over")
                lock.release()
                aside = self.run.path / time.strftime(f"{FINAL_DIR}-replaced-%Y%m%d-%H%M%S")
                final.rename(aside)
                tell(f"the previous retraining moved to {aside}")
                final.mkdir()
                lock = RunLock(final)
                previous = None
            if previous is not None and (final / FINAL_METRICS).is_file():
                tell(f"{final} already holds this retraining; nothing to do")
                return json.loads((final / FINAL_METRICS).read_text())
            resume = None
            if previous is not None:
                resume = _read_checkpoint(final)["state"]
                tell(f"resuming after epoch {resume['epoch']} of {self.schedule.train_epochs} "
                     f"from {final / CHECKPOINT}")
            return self._train(resume, device, progress)
        finally:
            lock.release()

    def _train(self, resume: dict[str, Any] | None, device: str | None,
               progress: Progress | None) -> dict[str, Any]:
        data, genome, final, settings = self.data, self.trial.genome, self.final, self.settings
        x, y = data.train_val()
        # The validation split joins training: nothing is selected on it any more.
        merged = replace(data, train_x=x, train_y=y, val_x=data.val_x[:0], val_y=data.val_y[:0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build(genome, data.input_shape, data.num_classes)
        if self.warm is not None:  # fine-tuning: the trial's weights, every exit trained
            model.load_state_dict(load_state(self.warm))
            model = AllExits(model)
        if self.parts and resume is None:  # a resumed training has its own weights
            load_parts(genome, model, [torch.load(path, map_location="cpu", weights_only=True)
                                       for path in self.parts], data.input_shape)

        def checkpoint(state: dict[str, Any]) -> None:
            save_atomic({"settings": settings, "state": state}, final / CHECKPOINT, sync=True)

        result = train(model, merged, self.schedule, seed=self.seed, device=device,
                       evaluate_test=True, progress=progress, checkpoint=checkpoint,
                       resume=resume)
        if result.status != "done":
            (final / CHECKPOINT).unlink(missing_ok=True)
            raise EpnasError(f"retraining {result.status} in epoch {result.epochs + 1} (loss "
                             f"{result.loss}); lower the learning rate with "
                             "--schedule-opt lr=...")
        net = model.net if isinstance(model, AllExits) else model
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        save_atomic(state, final / FINAL_WEIGHTS, sync=True)
        write_atomic(final / GENOME, genome.to_json().encode() + b"\n", sync=True)
        metrics = {
            **settings,
            "space": genome.space,
            "test_accuracy": result.test_accuracy,
            "epochs": result.epochs,
            "train_seconds": result.history[-1]["seconds"],  # optimisation, all sessions
            "images_per_second": result.images_per_second,
            "loss": result.loss,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "classes": list(data.classes),
            "mean": list(data.mean),
            "std": list(data.std),
            "cost": cost(genome, data.input_shape, data.num_classes).as_dict(
                self.schedule.batch_size),
            "history": list(result.history),
            **(self.exit_metrics(net) if self.warm is not None else {}),
            "weights": FINAL_WEIGHTS,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        text = json.dumps(metrics, indent=2) + "\n"
        write_atomic(final / FINAL_METRICS, text.encode(), sync=True)
        (final / CHECKPOINT).unlink(missing_ok=True)
        return metrics


class AllExits(nn.Module):
    """A multi-exit network trained at every exit: in training mode its forward gives
    every exit's logits (the trainer's loss is their mean), in eval mode the last's."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.net.forward_exits(x) if self.training else self.net(x)


def plan(run: Run | str | Path, trial_id: int | None = None, *, epochs: int | None = None,
         cutout: bool = True, dataset: str | None = None, data: str | None = None,
         schedule: dict[str, Any] | None = None, seed: int = 0,
         init: str = "scratch") -> Retraining:
    """Choose what to retrain: a trial (None: the best feasible one), data and schedule.

    Args:
        run: the run (or its directory).
        trial_id: the trial whose architecture to train.
        epochs: train exactly this many epochs (default: the ``full`` schedule's).
        cutout: apply Cutout (the data set's size unless ``schedule`` sets ``cutout``).
        dataset, data: another data set than the search's (name, files); needed after
            a label-free search on images without labels.
        schedule: overrides of :class:`~epnas.train.Schedule` fields; ``precision``
            defaults to the one the search recorded (``--precision``).
        seed: seeds initialisation, shuffling and augmentation.
        init: ``scratch``, or ``parts``: a dna search's assembled network starts every
            block from its part's distilled weights.

    Raises:
        EpnasError: no such trial (or none feasible), missing data, a bad schedule,
            ``init=parts`` for a trial without parts or on another data set.
    """
    run = run if isinstance(run, Run) else load_run(run)
    trial = run.trial(trial_id) if trial_id is not None else run.best()
    if trial is None:
        raise EpnasError(f"{run.path} has no feasible finished trial; choose one with "
                         "--trial ID (epnas status lists them)")
    if dataset and dataset != run.dataset:
        loaded = load(dataset, data)
    elif data and run.dataset:  # the search's data set, found elsewhere
        loaded = load(run.dataset, data)
    else:
        loaded = run.data
    if not loaded.classes:  # a label-free search (pretext fidelity) on unlabelled images
        raise EpnasError(f"data set {loaded.name!r} has no labels to retrain with: give "
                         "labelled data, e.g. --dataset fashion-mnist, or --data DIR with a "
                         "directory per class")
    overrides = dict(schedule or {})
    warm = None
    if run.supernet and loaded.name == run.dataset:  # fine-tune the measured sub-network
        found = [path for path in (trial_weights_path(run.path, t) for t in
                                   (trial.id, trial.source) if t is not None) if path.is_file()]
        if not found:
            raise EpnasError(f"trial {trial.id} of {run.path} kept no sub-network weights "
                             f"(trials/{trial.id}/model.pt) to fine-tune; search the supernet "
                             "again with this version of epnas")
        warm = found[0]
        overrides.setdefault("lr", run.supernet["options"]["shrink_lr"])
    if run.config.precision != "auto":  # the search's decision, whoever retrains
        overrides.setdefault("precision", run.config.precision)
    if epochs is not None:  # exactly N epochs; the LR curve spans them
        overrides.update(epochs=epochs, stop_epoch=None)
    if not cutout:
        overrides["cutout"] = 0
    try:
        chosen = schedules.get("full", dataset=loaded, **overrides)
    except ValueError as exc:
        raise EpnasError(validation_message("schedule", exc)) from None
    return Retraining(run, trial, loaded, chosen, seed, warm,
                      _parts(run, trial, loaded) if init == "parts" else ())


def _parts(run: Run, trial: TrialRecord, data: Dataset) -> tuple[Path, ...]:
    """The files of the parts a dna search assembled ``trial`` from, block by block."""
    keys = trial.info.get("part_keys")
    if not keys:
        raise EpnasError(f"trial {trial.id} of {run.path} was not assembled from parts by the "
                         "dna strategy: --init parts is for a dna search's assembled network")
    if data.name != run.dataset:
        raise EpnasError(f"--init parts starts from parts distilled on {run.dataset}: retrain "
                         f"on that data set, not {data.name}")
    found = []
    for k, key in enumerate(keys):
        path = find_part(run.path / TRIALS_DIR, k, str(key))
        if path is None:
            raise EpnasError(f"the trained block of part {key} (block {k}) is not in "
                             f"{run.path / TRIALS_DIR}/*/{part_file(k, str(key))}; retrain "
                             "with --init scratch")
        found.append(path)
    return tuple(found)


def retrain(run: Run | str | Path, trial_id: int | None = None, *, device: str | None = None,
            force_new: bool = False, progress: Progress | None = None,
            **options: Any) -> dict[str, Any]:
    """Retrain a trial (None: the best feasible one) into ``RUN_DIR/final/``: :func:`plan`
    with ``options``, then :meth:`Retraining.fit`. Returns ``final/metrics.json``."""
    return plan(run, trial_id, **options).fit(device=device, force_new=force_new,
                                               progress=progress)


def _stored_settings(final: Path) -> dict[str, Any] | None:
    """The settings of the retraining ``final/`` holds (finished or checkpointed)."""
    if (final / FINAL_METRICS).is_file():
        stored = json.loads((final / FINAL_METRICS).read_text())
        return {k: stored.get(k) for k in ("trial", "key", "dataset", "seed", "schedule", "init")}
    if (final / CHECKPOINT).is_file():
        return _read_checkpoint(final)["settings"]
    return None


def _read_checkpoint(final: Path) -> dict[str, Any]:
    try:
        return torch.load(final / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as exc:  # written atomically: only a foreign file gets here
        raise EpnasError(f"cannot read {final / CHECKPOINT} ({str(exc).splitlines()[0]}); "
                         "add --force-new to set it aside and start over") from None


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for key in new:
        if key == "schedule":
            parts += [f"{k}: {old[key].get(k)!r} there vs {v!r} here"
                      for k, v in new[key].items() if old[key].get(k) != v]
        elif old.get(key) != new[key]:
            parts.append(f"{key}: {old.get(key)!r} there vs {new[key]!r} here")
    return "; ".join(parts)


# --- command line ------------------------------------------------------------------------

def cmd_retrain(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json == "-", highlight=False, soft_wrap=True)
    job = plan(args.run_dir, args.trial, epochs=args.epochs, cutout=args.cutout,
               dataset=args.dataset, data=args.data, seed=args.seed, init=args.init,
               schedule=parse_options(args.schedule_opt, "--schedule-opt"))
    total = job.schedule.train_epochs
    how = "fine-tuning every exit" if job.warm is not None else (
        "retraining from its parts" if job.parts else "retraining")
    console.print(f"{how} of trial {job.trial.id} of {job.run.path} ({job.trial.key}) on "
                  f"{job.data.name} train+validation: {total} epochs of the full schedule")

    def progress(epoch: int, record: dict[str, float]) -> None:
        console.print(f"epoch {epoch}/{total}  loss {record['loss']:.4f}  train "
                      f"{100 * record['train_accuracy']:.2f}%  {record['seconds']:.1f}s  "
                      f"{record['images_per_second']:,.0f} img/s")

    metrics = job.fit(device=args.device, force_new=args.force_new, progress=progress,
                       notice=console.print)
    if args.json:
        emit_json(args, [json.dumps(metrics)])
    if args.json != "-":
        console.print(f"test accuracy {100 * metrics['test_accuracy']:.2f}% after "
                      f"{metrics['epochs']} epochs; weights and metrics in {job.final}")
        if "exit_accuracy" in metrics:
            exits = ", ".join(f"{100 * a:.2f}%" for a in metrics["exit_accuracy"])
            console.print(f"test accuracy per exit: {exits}")
        if "early_exit_accuracy" in metrics:
            console.print(f"early exit at the search's thresholds: "
                          f"{100 * metrics['early_exit_accuracy']:.2f}% at "
                          f"{metrics['avg_flops']:,.0f} FLOPs per input on average")
    return 0


def add_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``epnas retrain``."""
    p = sub.add_parser("retrain", help="train a searched architecture on train+validation",
                       description="Train the best (or a chosen) trial's architecture from "
                                   "scratch with the full schedule on train+validation and "
                                   "measure test accuracy; results in RUN_DIR/final/. Running "
                                   "it again resumes after the last finished epoch. A "
                                   "supernet search's network is fine-tuned from its sliced "
                                   "weights instead, every exit trained.")
    add_trial_arguments(p)
    p.add_argument("--epochs", type=int, help="train exactly N epochs (default: the full "
                                              "schedule's)")
    p.add_argument("--cutout", action=argparse.BooleanOptionalAction, default=True,
                   help="Cutout augmentation, sized for the data set (default on)")
    p.add_argument("--dataset", help="data set (default: the search's)")
    p.add_argument("--data", metavar="PATH", help="where the data set's files are")
    p.add_argument("--schedule-opt", action="append", metavar="KEY=VALUE",
                   help="schedule field, e.g. lr=0.05 or batch_size=64 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=("scratch", "parts"), default="scratch",
                   help="a dna search's assembled network: start every block from its "
                        "part's distilled weights (parts) or from scratch (default)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--force-new", action="store_true",
                   help="set aside a final/ of other settings and start over")
    json_flag(p)
    p.set_defaults(func=cmd_retrain)
