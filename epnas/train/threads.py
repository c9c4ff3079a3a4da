"""The torch threads a trial may use now, which its worker pool can change mid-trial.

A pool of W local workers on C cores gives each worker C // W threads. When a batch is
down to its last trials and other workers sit idle, the pool lends their cores to the
trials still running (:class:`~epnas.executors.ProcessExecutor` with ``elastic``): it
writes a worker's new allowance to shared memory, and the trainer takes it at its next
step through :func:`follow`. Outside such a pool :func:`follow` changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch

_allowance: Any = None  # a shared ``multiprocessing`` int written by the pool


def lend(allowance: Any) -> None:
    """Follow ``allowance`` (anything with an int ``.value``; None: stop following)."""
    global _allowance
    _allowance = allowance


def follow() -> int:
    """Set torch's thread count to the current allowance; the threads now in use."""
    if _allowance is None:
        return torch.get_num_threads()
    threads = int(_allowance.value)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
