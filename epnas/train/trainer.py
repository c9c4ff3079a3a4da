"""The training loop: one readable file, every hyper-parameter in a :class:`Schedule`.

The data set stays on the training device as uint8 tensors; each step gathers a
shuffled batch, augments it there (:mod:`epnas.data.augment`), normalises it and takes
an SGD step under autocast. That removes the DataLoader, the per-image Python
transforms and the host-to-device copies that dominate a plain PyTorch loop for the
small networks a search trains. On CPU, the channels-last layout (and bf16 autocast
where this processor trains faster with it) lets oneDNN use its fast convolution
kernels; on CUDA the same code runs with bf16 or
fp16 (with loss scaling) autocast.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from epnas.data import augment
from epnas.data.datasets import cache_home
from epnas.train.graphs import GRAPH_MODES, GraphedEval, StaticStep
from epnas.train.schedules import Schedule
from epnas.train.threads import follow

__all__ = ["Checkpoint", "Criterion", "Progress", "TrainResult", "autocast_dtype",
           "decide_precision", "evaluate", "train"]

Progress = Callable[[int, dict[str, float]], None]
Checkpoint = Callable[[dict[str, Any]], None]
# A pretext task: uint8 batch and generator -> (inputs, labels) (epnas.data.pretext).
Task = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
# A loss in place of cross-entropy (knowledge distillation): one exit's float logits, the
# labels, the augmented normalised inputs and their indices in train_x -> the loss.
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _Data(Protocol):
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class TrainResult:
    """What a training run measured.

    Attributes:
        status: ``"done"``; ``"diverged"`` when the loss became NaN or infinite
            (training stopped there, accuracies are 0); ``"timeout"`` when
            ``time_limit`` ran out (the partly trained model was still evaluated).
        accuracy: Validation accuracy, a fraction in [0, 1].
        val_loss: Validation cross-entropy (without label smoothing).
        test_accuracy: Test accuracy when asked for, else ``None``.
        loss: Mean training loss of the last epoch run (the non-finite value when
            diverged; the partial epoch when stopped early).
        epochs: Epochs completed.
        train_seconds: Wall time of the whole call, set-up and evaluation included.
        images_per_second: Training images per second of optimisation steps alone.
        threads: Mean torch threads of the optimisation steps (a worker pool may lend
            a trial more while other workers are idle: :mod:`epnas.train.threads`).
        cuda_graphs: How the steps ran: ``"off"`` (eager), ``"on"`` (the static-buffer
            step, captured on CUDA), ``"compile"``, or ``"fallback"`` (asked for
            graphs or compile, the network could not: eager).
        history: Per completed epoch: ``epoch``, ``lr``, ``loss``,
            ``train_accuracy``, ``seconds`` (cumulative), ``images_per_second``, and
            ``accuracy`` and ``val_loss`` on the epochs validation was evaluated.
    """

    status: str
    accuracy: float
    val_loss: float
    test_accuracy: float | None
    loss: float
    epochs: int
    train_seconds: float
    images_per_second: float
    history: tuple[dict[str, float], ...]
    threads: float = 1.0
    cuda_graphs: str = "off"

    def metrics(self) -> dict[str, float]:
        """The figures an evaluator reports, under the project's metric names."""
        out = {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "val_loss": self.val_loss,
            "epochs": float(self.epochs),
            "train_seconds": self.train_seconds,
            "images_per_second": self.images_per_second,
            "threads": self.threads,
        }
        if self.test_accuracy is not None:
            out["test_accuracy"] = self.test_accuracy
        return out


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse rather than hand it back to the system.

    glibc serves allocations of more than 128 KiB-32 MiB (a batch's activations) with
    ``mmap`` and unmaps them when freed, so every training step faults their pages in
    anew: measured here, over 100 page faults per image for a 40k-parameter CNN on
    Fashion-MNIST and a fifth of its training time. Raising the ``mmap`` threshold to
    its maximum (32 MiB) and the trim threshold to 512 MiB serves them from the heap,
    which keeps freed blocks (the 40k CNN then trains 1.25x faster). Process-wide and
    once per process; ``EPNAS_MALLOC=default`` leaves the allocator as it is. True when
    applied (Linux with glibc).
    """
    if os.environ.get("EPNAS_MALLOC", "").lower() == "default" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(
        mallopt(m_trim_threshold, 512 << 20))


# bf16 must beat fp32 by this factor in the median of the measurement: a clear margin,
# so that a loaded machine's noise does not flip the decision.
BF16_MARGIN = 1.25
# in the cache key, so that a record of an older method is measured anew
_MEASUREMENT = "median of 11 interleaved pairs on 1 thread"


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster a small convolution trains in bf16 than in fp32 on this CPU.

    AVX512-BF16 in the CPU flags does not settle it: on one of our machines bf16
    trained the reference networks about 2x faster, on another with the same flags
    bf16 matmuls ran at half the fp32 rate and a ResNet-like net trained 1.45x slower.
    So it is measured (:func:`_measure_bf16_speedup`, well under a second), once per
    machine, torch version and user, and kept in the user's epnas cache. A study does
    not rely on this cache for its precision: it decides once per run and records the
    decision in the run (:func:`decide_precision`); the cache only saves the
    measurement for the next decision, and for library calls of :func:`train` with
    ``precision="auto"``.
    """
    path = cache_home() / "cpu-bf16.json"
    key = f"{_machine_key()}, {_MEASUREMENT}"
    try:
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return float(record["speedup"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    text = json.dumps({"key": key, "speedup": _measure_bf16_speedup()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        try:
            os.link(tmp, path)  # the first process to measure decides for every other one
        except FileExistsError:
            if json.loads(path.read_text()).get("key") != key:  # an older machine's
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        text = path.read_text()
    except (OSError, ValueError):
        pass  # an unwritable cache: this process's own measurement
    return float(json.loads(text)["speedup"])


def _machine_key() -> str:
    return f"torch {torch.__version__}, {platform.machine()}, {_cpu_model()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _measure_bf16_speedup(pairs: int = 11) -> float:
    """Median over ``pairs`` of fp32 time / bf16 time of a 3x3, 32-channel convolution's
    forward and backward on a 64-image channels-last batch, on one thread.

    One thread, because on a machine that other work shares, threads of one operation
    wait for each other and the ratio swings from 0.6 to 1.8 between runs (measured on 2
    busy cores; on one thread the median stayed within 1.34-1.57). Each pair times fp32
    and bf16 back to back, in alternating order, so a change of load hits both sides of
    a ratio; the median ignores the pairs a burst of other work spoiled. Three warm-up
    pairs come first (oneDNN builds its kernels on first use).
    """
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(64, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    return model_bf16_speedup(conv, x.requires_grad_(True), pairs)


def model_bf16_speedup(model: nn.Module, example: torch.Tensor, pairs: int = 5) -> float:
    """fp32 time / bf16 time of a training step (forward, backward) of ``model`` on the
    ``example`` batch, on the CPU and one thread, measured as
    :func:`_measure_bf16_speedup` measures its convolution. A copy of ``model`` is timed
    (its BatchNorm statistics and gradients stay as they were); its output may be a
    tensor or a sequence of tensors (every exit's logits)."""
    probe = copy.deepcopy(model).cpu().train()
    example = example.cpu()

    def seconds(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = probe(example)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().sum() for o in outputs).backward()
        return time.perf_counter() - start

    return _interleaved_speedup(seconds, pairs)


def _interleaved_speedup(seconds: Callable[[bool], float], pairs: int) -> float:
    """Median of ``pairs`` ratios ``seconds(False) / seconds(True)`` on one thread, each
    pair timed back to back in alternating order, after three warm-up pairs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for i in range(pairs + 3):
            if i % 2:
                bf16, fp32 = seconds(True), seconds(False)
            else:
                fp32, bf16 = seconds(False), seconds(True)
            ratios.append(fp32 / bf16)
    finally:
        torch.set_num_threads(threads)
    return sorted(ratios[3:])[pairs // 2]


def _native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is
    slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def decide_precision(device: str | torch.device | None = None,
                     searched: Callable[[], float | None] | None = None) -> tuple[str, str]:
    """What ``precision="auto"`` means on ``device`` (None: CUDA when available), and why.

    On CUDA: bf16 where the GPU supports it, else fp16 (with loss scaling). On CPU: bf16
    only where the processor computes it natively, :func:`cpu_bf16_speedup` measured
    it at least :data:`BF16_MARGIN` times faster than fp32, and so did ``searched()``
    where it gives a figure (the speedup of the networks to be trained, as
    :func:`networks_bf16_speedup` measures it): on one CPU a plain convolution ran 1.6x
    faster in bf16 while networks of depthwise convolutions ran at half their fp32
    speed. Else fp32. A study calls this once per run, timing networks sampled from its
    space, and records both in the run's config.

    Returns:
        ``(precision, reason)``, e.g. ``("bf16", "auto: bf16 measured 1.62x faster than
        fp32 on this CPU")``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16"
        return "fp16", "auto: this GPU has no bf16"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type}"
    if not _native_cpu_bf16():
        return "fp32", "auto: this CPU has no native bf16"
    speedup = cpu_bf16_speedup()
    if speedup < BF16_MARGIN:
        return "fp32", (f"auto: bf16 measured {speedup:.2f}x the speed of fp32 on this CPU "
                        f"(below {BF16_MARGIN}x)")
    own = searched() if searched is not None else None
    if own is None:
        return "bf16", f"auto: bf16 measured {speedup:.2f}x faster than fp32 on this CPU"
    if own >= BF16_MARGIN:
        return "bf16", (f"auto: bf16 trains networks of the searched space {own:.2f}x faster "
                        f"than fp32 on this CPU")
    return "fp32", (f"auto: bf16 trains networks of the searched space at {own:.2f}x the "
                    f"speed of fp32 on this CPU, below {BF16_MARGIN}x; a plain convolution "
                    f"at {speedup:.2f}x")


def networks_bf16_speedup(key: str, networks: Callable[[], Sequence[tuple[nn.Module,
                                                                        torch.Tensor]]]
                          ) -> float | None:
    """The median of :func:`model_bf16_speedup` over ``networks()``, each a network with
    an example batch (None if there are none). Kept in the user's epnas cache under
    ``key`` (what the networks are: space, options, input) and this machine's CPU and
    torch version, so the next run of the same space and data here takes it from there."""
    path = cache_home() / "bf16-networks.json"
    entry = f"{_machine_key()}; {key}"
    known = _read_table(path)
    if entry in known:
        return float(known[entry])
    pairs = list(networks())
    if not pairs:
        return None
    speedup = statistics.median(model_bf16_speedup(model, example) for model, example in pairs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_read_table(path), entry: speedup}, indent=0))
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache: measured again next time
    return speedup


def _read_table(path: Path) -> dict[str, float]:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a :class:`Schedule` precision on a device; ``None``: fp32.

    ``"auto"`` is :func:`decide_precision`'s choice for the device (a study never passes
    ``auto`` to its trials: it decides once per run and passes the result).
    """
    if precision == "auto":
        precision = decide_precision(device)[0]
    if precision == "fp32":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def train(
    model: nn.Module,
    data: _Data,
    schedule: Schedule,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    evaluate_test: bool = False,
    progress: Progress | None = None,
    time_limit: float | None = None,
    checkpoint: Checkpoint | None = None,
    resume: Mapping[str, Any] | None = None,
    task: Task | None = None,
    cuda_graphs: str = "off",
    criterion: Criterion | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``schedule`` and measure it.

    Args:
        model: Any classifier mapping ``[N, C, H, W]`` floats to ``[N, classes]``
            logits (in training mode it may return a list of several exits' logits:
            the loss is their mean, the accuracy the last one's). It is moved to
            ``device`` (channels-last when the schedule says so), trained in place
            and left there in eval mode.
        data: A data set: uint8 ``train_x``/``val_x``/``test_x`` ``[N, C, H, W]``,
            int64 labels, per-channel ``mean`` and ``std`` of [0, 1]-scaled images.
        schedule: The hyper-parameters.
        seed: Seeds shuffling, augmentation and the model's own randomness
            (dropout); on CPU the same seed gives the same result bit for bit. The
            caller's global RNG state is left as it was.
        device: Where to train; default CUDA when available, else CPU.
        evaluate_test: Also measure test accuracy (only for final reports).
        progress: Called after every epoch with its number (from 1) and figures.
        time_limit: Seconds of training after which the run stops with status
            ``"timeout"``.
        checkpoint: Called after every epoch (after ``progress``) with the training
            state: tensors, numbers and lists only, so ``torch.save`` and
            ``torch.load(weights_only=True)`` round-trip it.
        resume: Such a state: training continues after its epoch with the model,
            optimizer and random generators as they were, so on CPU an interrupted and
            resumed run ends bit for bit where an uninterrupted one does. ``model`` must
            be built like the checkpointed one; the same ``data`` and ``schedule``.
        task: A pretext task (:mod:`epnas.data.pretext`): each augmented uint8 batch
            is replaced by the task's inputs and labels, so ``data.train_y`` is never
            read; ``data``'s validation and test sets must already be the task's.
        cuda_graphs: ``"on"``: each step runs over static buffers
            (:class:`~epnas.train.graphs.StaticStep`), on CUDA captured in a CUDA graph
            after a few warm-up steps and replayed, evaluation too (a network that fails
            to capture trains eagerly: ``"fallback"``); ``"auto"``: that on CUDA
            without fp16 loss scaling, else eager; ``"compile"``: the forward pass
            through ``torch.compile(mode="reduce-overhead")`` on CUDA; ``"off"``: eager.
            Same batches and LR schedule in every mode; the captured update rounds
            ``lr * grad`` separately (see :mod:`epnas.train.graphs`).
        criterion: The training loss of one exit's logits in place of cross-entropy with
            the schedule's label smoothing: called with the float logits, the labels,
            the augmented normalised batch and its indices in ``data.train_x`` (a
            teacher's logits for knowledge distillation; validation stays cross-entropy).

    Returns:
        The measured :class:`TrainResult`.
    """
    if cuda_graphs not in GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(GRAPH_MODES)}, "
                         f"got {cuda_graphs!r}")
    start = time.perf_counter()
    keep_freed_memory()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    memory_format = torch.channels_last if schedule.channels_last else torch.contiguous_format
    dtype = autocast_dtype(schedule.precision, device)
    model.to(device, memory_format=memory_format)

    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    n = len(train_y)
    if n == 0:
        raise ValueError("the training set is empty")
    batch_size = min(schedule.batch_size, n)
    steps_per_epoch = n // batch_size  # a ragged last batch would skew BN statistics

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": schedule.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=schedule.lr,
        momentum=schedule.momentum,
        nesterov=schedule.nesterov,
        foreach=True,
    )
    # Only fp16 can underflow gradients; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    generator = torch.Generator(device).manual_seed(seed)
    # A host read of the loss is free on CPU but stalls a GPU's queue, so there the
    # NaN check waits for a few steps' worth of work.
    check_every = 1 if device.type == "cpu" else 16

    cuda = device.type == "cuda"
    # fp16 loss scaling reads the gradients' finiteness on the host: never captured
    static = not scaler.is_enabled() and cuda_graphs in ("on", "auto" if cuda else "on")
    mode = ("on" if static else "compile" if cuda_graphs == "compile" and cuda else
            "fallback" if cuda_graphs == "on" else "off")
    forward: Callable[[torch.Tensor], Any] = model
    if mode == "compile":
        forward = torch.compile(model, mode="reduce-overhead")

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of the augmented batch at ``idx``, the logits scored, the labels."""
        x, made = _augmented(train_x[idx], schedule, mean, std, generator, task)
        y = train_y[idx] if made is None else made
        # the autocast weight cache would outlive a captured step's casts: off when static
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None,
                            cache_enabled=not static):
            logits = forward(x.contiguous(memory_format=memory_format))
        if criterion is not None:
            def loss_of(z: torch.Tensor) -> torch.Tensor:
                return criterion(z.float(), y, x, idx)
        else:
            def loss_of(z: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(z.float(), y, label_smoothing=schedule.label_smoothing)
        if isinstance(logits, (list, tuple)):  # several exits: the mean of their losses
            return sum(loss_of(z) for z in logits) / len(logits), logits[-1], y
        return loss_of(logits), logits, y

    runner = StaticStep(model, optimizer, compute, batch_size=batch_size, device=device,
                        capture=cuda, generator=generator) if static else None
    graphed = GraphedEval(model, schedule.eval_batch_size, dtype=dtype,
                          memory_format=memory_format) if static and cuda else None

    def measure(images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        return evaluate(
            model,
            images,
            labels,
            data.mean,
            data.std,
            batch_size=schedule.eval_batch_size,
            precision=schedule.precision,
            channels_last=schedule.channels_last,
            forward=graphed.logits_of if graphed is not None else None,
        )

    status, history = "done", []
    epochs_done, step, trained, step_seconds = 0, 0, 0, 0.0
    thread_seconds = 0.0  # threads x seconds of the optimisation steps
    loss_value = math.nan
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        generator.set_state(resume["generator"].to("cpu"))
        history = [dict(record) for record in resume["history"]]
        epochs_done, step = int(resume["epoch"]), int(resume["step"])
        trained, step_seconds = int(resume["trained"]), float(resume["step_seconds"])
        thread_seconds = float(resume.get("thread_seconds", step_seconds))
        loss_value = history[-1]["loss"] if history else math.nan
    cudnn = torch.backends.cudnn
    with (
        torch.random.fork_rng(
            devices=[device] if device.type == "cuda" else [], device_type=device.type
        ),
        # Autotuned kernels pay for themselves within an epoch; other settings stay.
        cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=True,
            deterministic=cudnn.deterministic,
            allow_tf32=cudnn.allow_tf32,
        ),
    ):
        torch.manual_seed(seed)
        if resume is not None:
            torch.random.set_rng_state(resume["rng"].to("cpu"))
        for _ in range(epochs_done, schedule.train_epochs):
            model.train()
            epoch_start = time.perf_counter()
            if runner is not None:  # the step adds to its own buffers
                loss_sum, correct = runner.loss_sum.zero_(), runner.correct.zero_()
            else:
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            order = torch.randperm(n, generator=generator, device=device)
            tick = epoch_start
            for i in range(steps_per_epoch):
                threads = follow()
                idx = order[i * batch_size : (i + 1) * batch_size]
                lr = schedule.lr_at((step + 0.5) / steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if runner is not None:
                    runner.step(idx, lr)
                else:
                    try:
                        loss, logits, y = compute(idx)
                    except torch.OutOfMemoryError:
                        raise
                    except Exception as exc:
                        if forward is model:
                            raise
                        forward, mode = model, "fallback"  # torch.compile failed
                        logging.getLogger(__name__).warning(
                            "torch.compile failed, training eagerly: %s", exc)
                        loss, logits, y = compute(idx)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum += loss.detach() * len(y)
                    correct += (logits.argmax(1) == y).sum()

                step += 1
                seen += len(idx)
                now = time.perf_counter()
                thread_seconds += threads * (now - tick)
                tick = now
                if step % check_every == 0 and not torch.isfinite(loss_sum):
                    status = "diverged"
                    break
                if time_limit is not None and time.perf_counter() - start > time_limit:
                    status = "timeout"
                    break
            _sync(device)
            epoch_seconds = time.perf_counter() - epoch_start
            step_seconds += epoch_seconds
            trained += seen
            loss_value = loss_sum.item() / max(seen, 1)
            if status == "done" and not math.isfinite(loss_value):
                status = "diverged"
            if status != "done":
                break

            epochs_done += 1
            record = {
                "epoch": float(epochs_done),
                "lr": lr,
                "loss": loss_value,
                "train_accuracy": correct.item() / seen,
                "seconds": step_seconds,
                "images_per_second": seen / epoch_seconds,
            }
            every = schedule.eval_every
            if epochs_done == schedule.train_epochs or (every and epochs_done % every == 0):
                record["accuracy"], record["val_loss"] = measure(data.val_x, data.val_y)
            history.append(record)
            if progress is not None:
                progress(epochs_done, record)
            if checkpoint is not None:
                checkpoint({
                    "epoch": epochs_done,
                    "step": step,
                    "trained": trained,
                    "step_seconds": step_seconds,
                    "thread_seconds": thread_seconds,
                    "history": history,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "generator": generator.get_state(),
                    "rng": torch.random.get_rng_state(),
                })

    accuracy, val_loss, test_accuracy = 0.0, math.nan, None
    if status == "done":
        accuracy, val_loss = history[-1]["accuracy"], history[-1]["val_loss"]
    elif status == "timeout":
        accuracy, val_loss = measure(data.val_x, data.val_y)
    if evaluate_test and status != "diverged":
        test_accuracy, _ = measure(data.test_x, data.test_y)
    model.eval()
    return TrainResult(
        status=status,
        accuracy=accuracy,
        val_loss=val_loss,
        test_accuracy=test_accuracy,
        loss=loss_value,
        epochs=epochs_done,
        train_seconds=time.perf_counter() - start,
        images_per_second=trained / max(step_seconds, 1e-9),
        history=tuple(history),
        threads=thread_seconds / step_seconds if step_seconds > 0 else float(follow()),
        cuda_graphs=runner.mode if runner is not None else mode,
    )


def _augmented(
    x: torch.Tensor,
    schedule: Schedule,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator,
    task: Task | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A uint8 training batch, augmented as the schedule says and normalised to floats,
    and the pretext task's labels (None without a task)."""
    x = augment.random_crop(x, schedule.crop_padding, generator)
    if schedule.flip:
        x = augment.random_flip(x, generator)
    y = None
    if task is not None:  # after crop and flip: the task's label describes the input
        x, y = task(x, generator)
    x = x.float().div_(255.0)
    if schedule.brightness:
        x = augment.jitter_brightness(x, schedule.brightness, generator)
    if schedule.contrast:
        x = augment.jitter_contrast(x, schedule.contrast, generator)
    x = x.sub_(mean).div_(std)
    return augment.cutout(x, schedule.cutout, generator), y


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int = 256,
    precision: str = "auto",
    channels_last: bool = True,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` (in eval mode) on a labelled set.

    Args:
        model: The classifier; evaluated on the device its parameters are on.
        images: uint8 images ``[N, C, H, W]``, on any device.
        labels: int64 labels ``[N]``.
        mean: Per-channel mean of [0, 1]-scaled training images.
        std: Per-channel standard deviation, likewise.
        batch_size: Images per forward pass.
        precision: Autocast precision, as in :class:`Schedule`.
        channels_last: Feed the network NHWC tensors.
        forward: Float logits of a normalised batch in place of the model's own
            forward pass (a captured one: :class:`~epnas.train.graphs.GraphedEval`).

    Returns:
        ``(accuracy, loss)``; both NaN for an empty set.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(precision, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device)
    for i in range(0, len(labels), batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True)
        y = labels[i : i + batch_size].to(device, non_blocking=True)
        x = x.float().div_(255.0).sub_(mean_t).div_(std_t)
        if forward is not None:
            logits = forward(x)
        else:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x.contiguous(memory_format=memory_format)).float()
        correct += (logits.argmax(1) == y).sum()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
    if len(labels) == 0:
        return math.nan, math.nan
    return correct.item() / len(labels), loss_sum.item() / len(labels)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so that timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
