"""Measured inference latency: the median forward time of a network at batch 1.

Costs in epnas come from the analytic cost model, but FLOPs predict time poorly on
small CPUs and mobile parts, so a deployment budget is better stated as measured time.
The measurement runs where the evaluator runs (same device, same thread count), so
compare latencies taken under the same settings: parallel workers share cores.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from epnas.spaces.genome import Genome
from epnas.spaces.registry import build


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], *,
                    device: str | torch.device | None = None, repeats: int = 30,
                    warmup: int = 5) -> float:
    """Median milliseconds of ``model``'s forward pass on one input of ``input_shape``.

    The model is put in eval mode (BN uses its running statistics) under
    ``torch.inference_mode``; ``warmup`` passes first let allocators and caches settle.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    x = torch.rand(1, *input_shape, device=device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def genome_latency(genome: Genome, input_shape: tuple[int, int, int], num_classes: int, *,
                   device: str | torch.device | None = None, repeats: int = 30) -> float:
    """:func:`measure_latency` of ``genome`` built for ``input_shape`` and ``num_classes``."""
    return measure_latency(build(genome, input_shape, num_classes), input_shape,
                           device=device, repeats=repeats)
