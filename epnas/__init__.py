"""epnas: Efficient Progressive Neural Architecture Search for PyTorch."""

__version__ = "0.1.0"
