"""epnas: Efficient Progressive Neural Architecture Search for PyTorch."""

__version__ = "0.1.0"

from epnas import spaces
from epnas.config import StudyConfig
from epnas.costmodel import Cost
from epnas.errors import ActionError, EpnasError, GenomeError, SpaceError
from epnas.runs import Run, load_run
from epnas.spaces import Genome, Space, build, cost, load_genome
from epnas.study import Study, StudyFailed, Summary

__all__ = [
    "ActionError", "Cost", "EpnasError", "Genome", "GenomeError", "Run", "Space", "SpaceError",
    "Study", "StudyConfig", "StudyFailed", "Summary", "__version__", "build", "cost", "load_genome",
    "load_run", "spaces",
]
