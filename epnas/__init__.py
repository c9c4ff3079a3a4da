"""epnas: Efficient Progressive Neural Architecture Search for PyTorch.

The public API, re-exported from the modules that define it; no module of the package
imports this one back. The Study, its config and stored runs load on first use, so that
``import epnas.spaces`` (a plug-in author's import) loads neither the Study nor the
executors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from epnas import spaces
from epnas._version import __version__
from epnas.costmodel import Cost
from epnas.errors import ActionError, EpnasError, GenomeError, SpaceError
from epnas.spaces import Genome, Space, build, cost, load_genome

if TYPE_CHECKING:
    from epnas.config import StudyConfig
    from epnas.runs import Run, load_run
    from epnas.study import Study, StudyFailed, Summary

_LAZY = {"StudyConfig": "epnas.config", "Run": "epnas.runs", "load_run": "epnas.runs",
         "Study": "epnas.study", "StudyFailed": "epnas.study", "Summary": "epnas.study"}

__all__ = [
    "ActionError", "Cost", "EpnasError", "Genome", "GenomeError", "Run", "Space", "SpaceError",
    "Study", "StudyConfig", "StudyFailed", "Summary", "__version__", "build", "cost", "load_genome",
    "load_run", "spaces",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'epnas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
