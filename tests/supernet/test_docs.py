"""docs/dynamic.md: its digits commands run as written (with fewer epochs and trials)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "dynamic.md"


def _commands(block: int) -> list[str]:
    """The shell lines of the doc's ``block``-th bash block, continuations joined,
    comments dropped, ``epnas`` run by this interpreter."""
    text = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)[block]
    lines = [re.sub(r"(^|\s+)#.*$", "", line) for line in text.replace("\\\n", " ").splitlines()]
    return [re.sub(r"^epnas ", f"{sys.executable} -m epnas ", line.strip())
            for line in lines if line.strip() and "..." not in line]


@pytest.mark.slow  # a supernet trained for one epoch and a 3-trial search: about 20 s
def test_the_digits_commands_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks: threads only contend
    train = _commands(0)[0]
    assert "--dataset digits" in train
    subprocess.run(f"{train} --epochs-per-phase 1,1,0,0 --plain", shell=True, check=True,
                   cwd=tmp_path, capture_output=True, timeout=300, env=env)
    report = json.loads((tmp_path / "runs/supernet-digits/report.json").read_text())
    assert [p["phase"] for p in report["phases"]] == ["largest", "kernel"]
    search = _commands(1)[0]
    done = subprocess.run(f"{search} --trials 3 --json", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout.strip().splitlines()[-1])["best"]["metrics"]
    assert {"avg_flops", "exit0_share", "threshold0"} <= set(best)
