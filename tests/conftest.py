"""Shared fixtures: every registered space, and cost-vs-model measurement helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from torch.utils.flop_counter import FlopCounterMode

import epnas

SPACES = epnas.spaces.names()

# CI runs every property test with 200 examples; everyday runs use fewer.
settings.register_profile("ci", max_examples=200, derandomize=True)
settings.register_profile("dev", max_examples=40)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(params=SPACES)
def space(request: pytest.FixtureRequest) -> epnas.Space:
    """Every registered space with its default options (new spaces are tested on arrival)."""
    return epnas.spaces.get(request.param)


def measure(genome: epnas.Genome, input_shape: tuple[int, int, int],
            num_classes: int = 10) -> tuple[int, int]:
    """(parameters, forward FLOPs at batch 1) of the built model, measured by torch.

    The model runs on the meta device: parameter counts and FLOPs depend on shapes only,
    and real numbers are checked by the forward tests.
    """
    with torch.device("meta"):
        model = epnas.build(genome, input_shape, num_classes).eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(torch.empty(1, *input_shape))
    assert out.shape == (1, num_classes)
    return params, counter.get_total_flops()


def assert_cost_matches(genome: epnas.Genome, input_shape: tuple[int, int, int],
                        num_classes: int = 10) -> None:
    cost = epnas.cost(genome, input_shape, num_classes)
    params, flops = measure(genome, input_shape, num_classes)
    assert cost.params == params, (genome.to_json(), input_shape)
    assert abs(cost.flops - flops) <= 0.01 * flops, (genome.to_json(), input_shape)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished search on digits (4 small random trials of 1 epoch, ~15 s), made once.

    Read-only for tests: copy it (``shutil.copytree``) before writing into it.
    """
    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text("evaluator_options:\n  schedule: {epochs: 1, warmup_epochs: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "epnas", "search", "--config", str(config), "--strategy",
         "random", "--trials", "4", "--space-opt", "max_layers=4", "--space-opt",
         "channels=8,16,32", "--max-params", "20k", "--out", str(root / "tiny"), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return root / "tiny"
