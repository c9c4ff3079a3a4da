"""The README's "From search to a deployed model" block, run as written, as a newcomer would."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[str]:
    """The commands of the README section's shell block, comments cut off."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From search to a deployed model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_walkthrough_is_a_search_to_deployment_path() -> None:
    verbs = [shlex.split(c)[1] for c in walkthrough()]
    assert verbs == ["search", "status", "retrain", "export", "export", "report"]


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    for command in walkthrough():
        argv = shlex.split(command)
        done = subprocess.run([sys.executable, "-m", "epnas", *argv[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"

    run = tmp_path / "runs" / "digits"
    metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8  # a real network, really trained
    html = (run / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4

    # the two exports are the same network with the same weights
    import onnxruntime as ort
    import torch

    from epnas.data import load

    data = load("digits")
    images = data.test_x[:16].numpy()
    session = ort.InferenceSession(str(tmp_path / "deploy" / "model.onnx"))
    spec = importlib.util.spec_from_file_location("model", tmp_path / "deploy" / "plain" /
                                                  "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load()
    x = module.preprocess(torch.from_numpy(images))
    with torch.no_grad():
        plain = net(x).numpy()
    onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(plain - onnx).max() < 1e-4
    accuracy = (plain.argmax(1) == data.test_y[:16].numpy()).mean()
    assert accuracy >= 0.75
