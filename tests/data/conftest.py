"""Fixtures for the data set tests: a private cache and no stray data directories."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``EPNAS_CACHE`` into the test's own directory so nothing touches ``~``."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EPNAS_CACHE", str(cache))
    monkeypatch.delenv("EPNAS_DATA", raising=False)
    return cache
