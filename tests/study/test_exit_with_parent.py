"""A worker ends with its parent: kill -9 of a benchmark or a study leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = """
import multiprocessing as mp, sys, time

def child(path):
    from epnas.executors import exit_with_parent
    exit_with_parent()
    open(path, "w").write(str(__import__("os").getpid()))
    time.sleep(120)

if __name__ == "__main__":
    mp.get_context("spawn").Process(target=child, args=(sys.argv[1],)).start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not yet reaped by init) counts as ended
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def test_a_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    script, marker = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(marker)],
                              stdin=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the child has started once it wrote its pid
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.05)
        child = int(marker.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(600):
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        if marker.exists() and marker.read_text() and _alive(int(marker.read_text())):
            os.kill(int(marker.read_text()), signal.SIGKILL)
