"""Training throughput: a plain PyTorch loop against ``epnas.train.train``, side by side.

The plain loop is what a tutorial writes: a DataLoader over a TensorDataset, per-image
augmentation (random crop with padding, horizontal flip) in Python, batch 128, fp32,
contiguous (NCHW) tensors, SGD with Nesterov momentum. The trainer runs the ``full``
preset (batch 128, which also jitters brightness and contrast and cuts out) and the
``prediction`` preset (batch 256) on the same images. Two networks: a small CNN
(~40k parameters) and a ResNet-like one (~300k).

Every configuration is timed for ``--repeats`` single epochs, interleaved, and its best
epoch counts; the median over rounds of the trainer's epoch over the plain loop's epoch
of the same round is printed too. Each epoch waits (up to ``--idle-timeout`` seconds)
for the machine to be idle first: with 2 OpenMP threads on 2 cores, any busy neighbour
process slows training several-fold, far more than its share of the CPU. The trainer's
achieved GFLOP/s counts 3x the forward FLOPs per image (forward, and backward at twice
the forward) and is compared with the float32 peak and with the peak of the trainer's
own precision (bf16 where it autocasts to bf16), both measured in the same run as the
best of a large matrix product (MKL for fp32) and the same product as a 1x1 convolution
(oneDNN, which runs the trainer's convolutions): on some CPUs MKL's fp32 kernels reach
only part of what oneDNN does.

The plain loop runs in a child process with glibc's allocator defaults (the trainer
keeps freed memory for reuse, process-wide; the plain loop is also timed with that
setting, for comparison).

Run: ``python benchmarks/trainer_throughput.py`` (about 4 minutes on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from epnas.train import schedules, train
from epnas.train.trainer import autocast_dtype, keep_freed_memory

MATMUL = (torch.float32, torch.bfloat16)


class SmallCNN(nn.Sequential):
    """Four 3x3 conv-BN-ReLU layers, two max-pools, global pooling: ~40k parameters."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        super().__init__(
            *block(channels, 16),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 48),
            nn.MaxPool2d(2),
            *block(48, 48),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(48, classes),
        )


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class MediumResNet(nn.Sequential):
    """A stem and four basic blocks at widths 32-64-96: ~300k parameters."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(channels, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            BasicBlock(32, 32, 1),
            BasicBlock(32, 64, 2),
            BasicBlock(64, 64, 1),
            BasicBlock(64, 96, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(96, classes),
        )


class PerImageAugment(Dataset):
    """A TensorDataset seen through torchvision-style per-image transforms in Python."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: float, std: float, pad: int):
        self.base = TensorDataset(x, y)
        self.mean, self.std, self.pad = mean, std, pad

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, label = self.base[i]
        img = F.pad(img.float() / 255, (self.pad,) * 4)
        h, w = img.shape[1] - 2 * self.pad, img.shape[2] - 2 * self.pad
        top, left = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
        img = img[:, top : top + h, left : left + w]
        if random.random() < 0.5:
            img = img.flip(2)
        return (img - self.mean) / self.std, label


class PlainLoop:
    """The tutorial loop over one network; :meth:`epoch` returns training images/s.

    It runs in a process of its own (:class:`PlainProcess`): the trainer sets glibc's
    allocator to keep freed memory (``keep_freed_memory``), which is process-wide, and
    the plain loop is measured as a tutorial user runs it, with glibc's defaults.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, pad: int) -> None:
        scaled = x.float() / 255
        data = PerImageAugment(x, y, scaled.mean().item(), scaled.std().item(), pad)
        self.loader = DataLoader(data, batch_size=128, shuffle=True, drop_last=True)
        self.model = model
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
        )

    def epoch(self) -> float:
        self.model.train()
        start, seen = time.perf_counter(), 0
        for xb, yb in self.loader:
            loss = F.cross_entropy(self.model(xb), yb)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(yb)
        return seen / (time.perf_counter() - start)


def _plain_main(conn: Connection, net: str, x: torch.Tensor, y: torch.Tensor) -> None:
    torch.manual_seed(0)
    loop = PlainLoop(NETWORKS[net](), x, y, pad=2)
    while conn.recv():
        conn.send(loop.epoch())


class PlainProcess:
    """A :class:`PlainLoop` in a child process; calling it trains one epoch there."""

    def __init__(self, net: str, x: torch.Tensor, y: torch.Tensor) -> None:
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_plain_main, args=(child, net, x, y), daemon=True)
        self.process.start()

    def __call__(self) -> float:
        self.conn.send(True)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(False)
        self.process.join()


def trainer_epoch(model: nn.Module, data: object, schedule: schedules.Schedule) -> float:
    """Train ``model`` on with ``schedule``; returns training images per second."""
    return train(model, data, schedule, device="cpu").images_per_second


class Subset:
    """The first ``n`` training images of a data set, in the trainer's duck type."""

    def __init__(self, data: object, n: int) -> None:
        self.train_x, self.train_y = data.train_x[:n], data.train_y[:n]
        self.val_x, self.val_y = data.val_x[:500], data.val_y[:500]
        self.test_x, self.test_y = self.val_x, self.val_y
        self.mean, self.std, self.name = data.mean, data.std, data.name
        self.input_shape = tuple(data.train_x.shape[1:])


def fashion_mnist() -> object:
    """Fashion-MNIST when ``epnas.data`` can load it, else random images of its shape."""
    try:
        from epnas.data import load

        return load("fashion-mnist")
    except Exception as e:  # any failure to load falls back to synthetic data
        print(f"(fashion-mnist unavailable: {e}; using random uint8 images)")
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (12_000, 1, 28, 28), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (12_000,), generator=g)

        return SimpleNamespace(
            name="fashion-mnist",
            train_x=x[:10_000],
            train_y=y[:10_000],
            val_x=x[10_000:],
            val_y=y[10_000:],
            mean=(0.5,),
            std=(0.289,),  # of uniform bytes
        )


def cpu_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPUs busy over ``seconds``, from /proc/stat (0 where unavailable)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # idle and iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def when_idle(fn: Callable[[], float], max_busy: float, timeout: float) -> tuple[float, bool]:
    """Run ``fn`` once the machine is nearly idle (or after ``timeout`` seconds anyway).

    Returns ``fn``'s value and whether the machine was idle when it started.
    """
    deadline = time.monotonic() + timeout
    idle = cpu_busy() <= max_busy
    while not idle and time.monotonic() < deadline:
        idle = cpu_busy() <= max_busy
    return fn(), idle


def matmul_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    """Throughput of one ``n`` x ``n`` matrix product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - start) / 1e9


def conv_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    """Throughput of the ``n`` x ``n`` product as a 1x1 convolution over ``n`` pixels."""
    x = torch.randn(1, n, 32, n // 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    F.conv2d(x, w)  # warm-up: oneDNN creates its kernel
    start = time.perf_counter()
    F.conv2d(x, w)
    return 2 * n**3 / (time.perf_counter() - start) / 1e9


def forward_flops(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Forward FLOPs of one image (counted on a batch of 8, eval mode)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(8, *shape))
    return counter.get_total_flops() / 8


NETWORKS = {"SmallCNN": SmallCNN, "MediumResNet": MediumResNet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="measured epochs per config")
    parser.add_argument("--images-small", type=int, default=4096, help="images per epoch")
    parser.add_argument("--images-medium", type=int, default=2048, help="images per epoch")
    parser.add_argument("--max-busy", type=float, default=0.1, help="idle threshold")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="seconds")
    args = parser.parse_args()
    idle_runs = []

    def best_of(fn: Callable[[], float]) -> float:
        value, idle = when_idle(fn, args.max_busy, args.idle_timeout)
        idle_runs.append(idle)
        return value

    keep_freed_memory()  # the plain loop's own process keeps glibc's defaults
    data = fashion_mnist()
    shape = tuple(data.train_x.shape[1:])
    kernels = {"matmul": matmul_gflops, "1x1 conv": conv_gflops}
    kernel_gflops = {
        (d, k): max(best_of(partial(fn, d)) for _ in range(5))
        for d in MATMUL
        for k, fn in kernels.items()
    }
    peak = {d: max(kernel_gflops[d, k] for k in kernels) for d in MATMUL}
    precision = autocast_dtype("auto", torch.device("cpu")) or torch.float32
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, trainer precision {str(precision)[6:]}"
    )
    for d in MATMUL:
        print(f"{str(d)[6:]} peak {peak[d]:.0f} GFLOP/s (" + ", ".join(
            f"{k} {kernel_gflops[d, k]:.0f}" for k in kernels) + ")")
    print(f"data: {data.name} {shape}, best of {args.repeats} epochs per config\n")

    header = (
        f"{'network':<12} {'params':>7} {'MFLOP/img':>9}  {'plain img/s':>11}  "
        f"{'full img/s':>10} {'ratio':>5}  {'pred img/s':>10} {'ratio':>5}  "
        f"{'GFLOP/s (full, pred)':>20} {'of its peak':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, n in (("SmallCNN", args.images_small), ("MediumResNet", args.images_medium)):
        net = NETWORKS[name]
        subset = Subset(data, n)
        plain = PlainProcess(name, subset.train_x, subset.train_y)
        torch.manual_seed(0)
        tuned = PlainLoop(net(), subset.train_x, subset.train_y, pad=2)
        ours = net()
        # One epoch per call; the model is trained on across calls.
        one_epoch = {
            "full": schedules.get("full", subset, epochs=1),
            "pred": schedules.get("prediction", subset, stop_epoch=1),
            "bf16": schedules.get("full", subset, epochs=1, precision="bf16"),
            "fp32": schedules.get("full", subset, epochs=1, precision="fp32"),
        }
        runs: dict[str, Callable[[], float]] = {"plain": plain, "tuned": tuned.epoch}
        for key, schedule in one_epoch.items():
            runs[key] = partial(trainer_epoch, ours, subset, schedule)
        for fn in runs.values():
            fn()  # warm-up: oneDNN creates its kernels for each new shape
        measured = {key: [] for key in runs}
        for _ in range(args.repeats):  # interleaved, so slow spells hit every config
            for key, fn in runs.items():
                measured[key].append(best_of(fn))
        best = {key: max(values) for key, values in measured.items()}
        # Each round's trainer epoch over the plain epoch of the same round: robust to a
        # slow or fast spell that a best-of figure may catch on one side only.
        paired = {
            key: statistics.median(t / p for t, p in zip(measured[key], measured["plain"]))
            for key in ("full", "pred")
        }
        params = sum(p.numel() for p in ours.parameters())
        flops = forward_flops(net(), shape)
        achieved = [3 * flops * best[k] / 1e9 for k in ("full", "pred")]
        own, fp32 = peak[precision], peak[torch.float32]
        print(
            f"{net.__name__:<12} {params / 1e3:>6.0f}k {flops / 1e6:>9.2f}  "
            f"{best['plain']:>11.0f}  {best['full']:>10.0f} {best['full'] / best['plain']:>4.2f}x"
            f"  {best['pred']:>10.0f} {best['pred'] / best['plain']:>4.2f}x  "
            f"{achieved[0]:>9.1f}, {achieved[1]:>8.1f} "
            f"{achieved[0] / own:>6.1%}, {achieved[1] / own:>6.1%}"
        )
        print(f"{'':<12} median of {args.repeats} same-round ratios: {paired['full']:.2f}x "
              f"(full), {paired['pred']:.2f}x (prediction)")
        print(f"{'':<12} of the fp32 peak: {achieved[0] / fp32:.1%} (full), "
              f"{achieved[1] / fp32:.1%} (prediction)")
        print(f"{'':<12} full schedule with bf16 autocast {best['bf16']:.0f} img/s, in fp32 "
              f"{best['fp32']:.0f} img/s: bf16 / fp32 = {best['bf16'] / best['fp32']:.2f}x")
        print(f"{'':<12} the plain loop with the trainer's allocator settings "
              f"{best['tuned']:.0f} img/s ({best['tuned'] / best['plain']:.2f}x its default)")
        plain.close()
    busy = idle_runs.count(False)
    if busy:
        print(
            f"\n{busy} of {len(idle_runs)} measurements started on a busy machine "
            f"(over {args.max_busy:.0%} CPU for {args.idle_timeout:.0f} s): figures may be low"
        )


if __name__ == "__main__":
    main()
