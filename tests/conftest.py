"""Shared fixtures: every registered space, a seeded generator, a finished tiny run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import settings

import epnas

SPACES = epnas.spaces.names()

# CI runs every property test with 200 examples; everyday runs use fewer.
settings.register_profile("ci", max_examples=200, derandomize=True)
settings.register_profile("dev", max_examples=40)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (registered while it loads: its dataclasses
    look their module up)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture(params=SPACES)
def space(request: pytest.FixtureRequest) -> epnas.Space:
    """Every registered space with its default options (new spaces are tested on arrival)."""
    return epnas.spaces.get(request.param)


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
