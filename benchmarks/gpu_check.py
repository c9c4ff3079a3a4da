"""The GPU checks of issue 19 in one command: tests, training throughput, search throughput.

Three parts, each in its own process under its own timeout; a part that fails or runs
out of time is recorded as such and the others still run. Every figure goes to one JSON
file (``--out``/gpu_check.json):

- ``tests``: the suite's ``gpu`` tests and the device-sensitive files of the non-slow
  suite (pass/fail counts and the failures' names).
- ``throughput``: images per second of the reference network
  (``docs/examples/fmnist_small.json``) on Fashion-MNIST (a synthetic set of its shape
  when it is not installed), bf16 + channels-last, no augmentation, best epoch, at batch
  128 and 1024: a careful plain PyTorch loop (DataLoader over normalised tensors, pinned
  memory, 4 loader workers, non-blocking copies), and epnas's trainer eager, with CUDA
  graphs and with ``torch.compile(mode="reduce-overhead")``, each with its ratio to the
  plain loop; also the GPU memory a process's CUDA context takes (``cuda_context_bytes``,
  for :data:`epnas.executors.CUDA_CONTEXT_MEMORY`).
- ``search``: ``epnas search --max-params 100k`` for a fixed time with ``--workers-per-gpu
  1``, ``--workers 4`` (the issue's baseline) and ``--workers-per-gpu auto``: trials per
  minute and the GPU's busy share (``nvidia-smi`` sampled every 200 ms).

On a GPU machine: ``bash benchmarks/gpu_check.sh`` (under 8 minutes on one H200). On CPU,
``python benchmarks/gpu_check.py --device cpu --quick`` runs every part at tiny sizes to
check the script itself (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENOME = ROOT / "docs" / "examples" / "fmnist_small.json"
DEVICE_FILES = ["tests/train/test_trainer.py", "tests/train/test_cuda_graphs.py",
                "tests/study/test_executors.py", "tests/study/test_gpu_workers.py",
                "tests/study/test_precision.py"]
# seconds per part (the search's grows with --search-seconds): 8 minutes in all
PART_TIMEOUT = {"tests": 120, "throughput": 150, "search": 210}


def emit(figures: dict[str, Any]) -> None:
    """Print a part's figures so far: the last such line counts, also after a timeout."""
    print("RESULT " + json.dumps(figures), flush=True)


# --- data ---------------------------------------------------------------------------------


def synthetic_idx(directory: Path, train: int, test: int, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped IDX files (28x28 uint8, 10 classes, a learnable pattern per
    class plus noise) in ``directory``; returns it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (10, 28, 28))
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(patterns[y] * 0.6 + rng.integers(0, 100, (n, 28, 28)), 0, 255)
        header = np.array([0x803, n, 28, 28], dtype=">i4").tobytes()
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
            header + x.astype(np.uint8).tobytes())
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([0x801, n], dtype=">i4").tobytes() + y.tobytes())
    return directory


def dataset_args(args: argparse.Namespace, scratch: Path) -> tuple[list[str], str]:
    """``epnas search`` data flags and a note saying which data: Fashion-MNIST when it
    loads, else a synthetic set of its shape; digits with ``--quick``."""
    if args.quick:
        return ["--dataset", "digits"], "digits (quick)"
    from epnas.data import load
    from epnas.errors import EpnasError

    try:
        load("fashion-mnist")
        return ["--dataset", "fashion-mnist"], "fashion-mnist"
    except EpnasError:
        path = synthetic_idx(scratch / "fashion-mnist", 60000, 10000)
        return ["--dataset", "fashion-mnist", "--data", str(path)], \
            "synthetic (Fashion-MNIST shape)"


# --- part: tests --------------------------------------------------------------------------


def part_tests(args: argparse.Namespace) -> dict[str, Any]:
    # the files holding gpu tests, named: collecting the whole suite would also import
    # modules whose optional packages that machine may lack
    gpu_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                       if "mark.gpu" in p.read_text())
    runs = {"gpu": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                    "gpu", *gpu_files],
            "device_sensitive": [sys.executable, "-m", "pytest", "-q", "-p",
                                 "no:cacheprovider", "-m", "not slow", *DEVICE_FILES]}
    if args.quick:
        runs = {"gpu": runs["gpu"]}
    figures: dict[str, Any] = {}
    for name, command in runs.items():
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=PART_TIMEOUT["tests"] - 10)
        lines = done.stdout.strip().splitlines()
        figures[name] = {"returncode": done.returncode, "summary": lines[-1] if lines else "",
                         "failed": [line for line in lines if line.startswith("FAILED")],
                         "seconds": round(time.perf_counter() - start, 1)}
        emit(figures)
    return figures


# --- part: training throughput ------------------------------------------------------------


def _reference_data(args: argparse.Namespace) -> Any:
    import torch

    from epnas.data import Dataset, load
    from epnas.errors import EpnasError

    try:
        if args.quick:
            raise EpnasError("quick")
        data = load("fashion-mnist")
        return data, "fashion-mnist"
    except EpnasError:
        n = 2048 if args.quick else 60000
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n + 1000, 1, 28, 28), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n + 1000,), generator=g)
        data = Dataset(name="synthetic", train_x=x[:n], train_y=y[:n], val_x=x[n:],
                       val_y=y[n:], test_x=x[n:], test_y=y[n:],
                       classes=tuple(str(i) for i in range(10)), mean=(0.5,), std=(0.29,))
        return data, "synthetic (Fashion-MNIST shape)"


def _model(data: Any) -> Any:
    from epnas.spaces.registry import build, load_genome

    genome = load_genome(GENOME.read_text())
    return build(genome, data.input_shape, data.num_classes)


def plain_loop(data: Any, batch: int, epochs: int, device: str, workers: int) -> float:
    """Best epoch's images per second of a careful plain PyTorch loop."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = _model(data).to(device, memory_format=torch.channels_last)
    mean, std = data.mean[0], data.std[0]
    x = (data.train_x.float() / 255 - mean) / std
    loader = DataLoader(TensorDataset(x, data.train_y), batch_size=batch, shuffle=True,
                        drop_last=True, num_workers=workers, pin_memory=device == "cuda",
                        persistent_workers=workers > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    dtype = torch.bfloat16 if device == "cuda" else None
    best = 0.0
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            yb = yb.to(device, non_blocking=True)
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(xb).float(), yb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(yb)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, seen / (time.perf_counter() - start))
    return best


def trainer_rate(data: Any, batch: int, epochs: int, device: str, mode: str) -> dict[str, Any]:
    """Best epoch's images per second of epnas's trainer in a ``cuda_graphs`` mode."""
    import torch

    from epnas.train import schedules, train

    torch.manual_seed(0)
    schedule = schedules.get(
        "full", "fashion-mnist", epochs=epochs, batch_size=batch, crop_padding=0, flip=False,
        brightness=0.0, contrast=0.0, cutout=0, eval_every=0,
        precision="bf16" if device == "cuda" else "fp32")
    start = time.perf_counter()
    result = train(_model(data), data, schedule, device=device, cuda_graphs=mode)
    return {"images_per_second": max(r["images_per_second"] for r in result.history),
            "accuracy": result.accuracy, "mode": result.cuda_graphs,
            "seconds": round(time.perf_counter() - start, 1)}


def context_bytes() -> float | None:
    """GPU memory this process takes beyond its tensors (its CUDA context, cuDNN and
    cuBLAS), when it is the only process on the GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return float(total - free - torch.cuda.memory_reserved())


def part_throughput(args: argparse.Namespace) -> dict[str, Any]:
    data, source = _reference_data(args)
    device = args.device
    epochs = 2 if args.quick else 3
    batches = (128, 1024) if not args.quick else (128,)
    figures: dict[str, Any] = {"data": source, "epochs": epochs, "device": device,
                               "cuda_context_bytes": context_bytes(),
                               "batches": {str(b): {} for b in batches}}
    # compile last: its compilation takes the longest, and a timeout keeps the rest
    for mode in ("plain", "off", "on", "compile"):
        for batch in batches:
            row = figures["batches"][str(batch)]
            try:
                if mode == "plain":
                    row["plain"] = plain_loop(data, batch, epochs, device,
                                              workers=0 if args.quick else 4)
                    continue
                row[mode] = trainer_rate(data, batch, epochs, device, mode)
            except Exception as exc:
                row[mode] = {"error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc()[-2000:]}
                continue
            if isinstance(row.get("plain"), float):
                row[mode]["ratio_to_plain"] = row[mode]["images_per_second"] / row["plain"]
            emit(figures)
    return figures


# --- part: search -------------------------------------------------------------------------


class Utilisation:
    """The GPU's busy share, sampled every 200 ms by ``nvidia-smi`` while it runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process: subprocess.Popen[str] | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Utilisation:
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            first = line.strip().split(",")[0]
            if first.replace(".", "", 1).isdigit():
                self.samples.append(float(first))

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def busy(self) -> float | None:
        return statistics.fmean(self.samples) / 100 if self.samples else None


def part_search(args: argparse.Namespace) -> dict[str, Any]:
    from epnas.runs import load_run

    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    data_flags, source = dataset_args(args, scratch)
    seconds = 15 if args.quick else args.search_seconds
    trials = 3 if args.quick else args.trials
    figures: dict[str, Any] = {"data": source, "time_budget_s": seconds, "trials": trials,
                               "runs": {}}
    settings = {"workers-per-gpu 1": ["--workers-per-gpu", "1"],
                "workers 4": ["--workers", "4"],
                "workers-per-gpu auto": ["--workers-per-gpu", "auto"]}
    if args.quick:
        settings = {k: v for k, v in settings.items() if k != "workers 4"}
    for name, flags in settings.items():
        out = scratch / name.replace(" ", "_")
        command = [sys.executable, "-m", "epnas", "search", *data_flags, "--max-params", "100k",
                   "--trials", str(trials), "--time", f"{seconds}s", *flags, "--out", str(out),
                   "--quiet"]
        start = time.perf_counter()
        row: dict[str, Any] = {"command": " ".join(command[2:])}
        try:
            with Utilisation() as gpu:
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                      timeout=seconds + 60)
            row["returncode"] = done.returncode
            if done.returncode:
                row["stderr"] = done.stderr[-2000:]
            row["gpu_busy"] = gpu.busy()
        except subprocess.TimeoutExpired:
            row["timeout"] = True
        wall = time.perf_counter() - start
        try:
            run = load_run(out)
            finished = [t for t in run.trials if t.status in ("done", "failed")]
            row["trials_done"] = sum(t.status == "done" for t in run.trials)
            row["trials_failed"] = len(finished) - row["trials_done"]
            row["workers"] = run.config.workers
            row["trials_per_minute"] = 60 * len(finished) / wall
            train_s = [t.metrics.get("train_seconds") for t in run.trials
                       if t.status == "done" and t.metrics.get("train_seconds")]
            row["median_train_seconds"] = statistics.median(train_s) if train_s else None
        except Exception as exc:
            row["run_error"] = f"{type(exc).__name__}: {exc}"
        row["wall_s"] = round(wall, 1)
        figures["runs"][name] = row
        emit(figures)
    shutil.rmtree(scratch, ignore_errors=True)
    return figures


PARTS = {"tests": part_tests, "throughput": part_throughput, "search": part_search}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script on CPU")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder of gpu_check.json")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: "
                                                             + ", ".join(PARTS))
    p.add_argument("--trials", type=int, default=48)
    p.add_argument("--search-seconds", type=int, default=45,
                   help="time budget of each search (trials per minute compare them)")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part, print JSON
    args = p.parse_args()
    if args.part:
        emit(PARTS[args.part](args))
        return
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "argv": sys.argv[1:]}
    path = Path(args.out) / "gpu_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.parts.split(","):
        start = time.perf_counter()
        limit = PART_TIMEOUT[name] * (0.5 if args.quick else 1)
        command = [sys.executable, __file__, "--part", name, "--device", args.device,
                   "--trials", str(args.trials), "--search-seconds", str(args.search_seconds)]
        command += ["--quick"] if args.quick else []
        if name == "search":
            limit = max(limit, 3 * (args.search_seconds + 25))
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                  timeout=limit)
            out, entry = done.stdout, {}
            if done.returncode:
                entry = {"error": f"exit code {done.returncode}", "stderr": done.stderr[-3000:]}
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            entry = {"error": f"timed out after {limit:g} s"}
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        entry = {**(json.loads(lines[-1][7:]) if lines else {}), **entry}
        entry["part_seconds"] = round(time.perf_counter() - start, 1)
        report[name] = entry
        path.write_text(json.dumps(report, indent=1))  # what is done so far survives a kill
        print(f"{name}: {json.dumps(entry)[:1500]}", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
