"""Export of a multi-exit network searched on a supernet: every exit an ONNX output, the
thresholds and criterion in the metadata, and a standalone ``model.py`` whose early exit
decides as the evaluator's rule does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from epnas.evaluators.supernet import confidences, early_exit
from epnas.report.export import export
from epnas.runs import load_run
from epnas.study import Study
from tests.supernet.conftest import TINY, save_tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-trial search of a tiny (untrained) digits supernet."""
    root = tmp_path_factory.mktemp("exits")
    supernet = save_tiny(root / "supernet")
    torch.set_num_threads(1)
    Study(space="multistage", space_options=TINY, strategy="random", evaluator="supernet",
          evaluator_options={"path": str(supernet), "device": "cpu"}, trials=3, seed=2,
          out=str(root / "run")).run()
    return root / "run"


def inputs(run_dir: Path, n: int = 48) -> torch.Tensor:
    data = load_run(run_dir).data
    return data.normalised(data.val_x[:n])


def rule(logits: list[torch.Tensor], taus: list[float]) -> np.ndarray:
    """The exit the evaluator's rule picks for each input at thresholds ``taus``."""
    return early_exit(confidences(torch.stack(logits), "max_softmax").numpy(), taus)


def settings(run_dir: Path, logits: list[torch.Tensor]) -> list[list[float]]:
    """The best trial's thresholds, and the median first-exit confidence (which sends
    about half the inputs out early, so both exits are decided on)."""
    median = float(confidences(logits[0], "max_softmax").median())
    return [[load_run(run_dir).best().metrics["threshold0"]], [median]]


def test_trials_keep_weights_and_model_py_exits_early_as_the_rule(run_dir: Path,
                                                                   tmp_path: Path) -> None:
    run = load_run(run_dir)
    best = run.best()
    assert run.weights() == run_dir / "trials" / str(best.id) / "model.pt"
    done = export(run, "pytorch", tmp_path / "py")
    assert done.metadata["criterion"] == "max_softmax"
    assert done.metadata["thresholds"] == [best.metrics["threshold0"]]
    spec = importlib.util.spec_from_file_location("exported", tmp_path / "py" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net, original = module.load(), run.build()
    x = inputs(run_dir)
    with torch.no_grad():
        want = original.forward_exits(x)
        got = net.forward_exits(x)
    assert len(got) == 2 and all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))
    for taus in settings(run_dir, want):
        module.THRESHOLDS = tuple(taus)
        decided = rule(want, taus)
        picked = [net.early_exit(image) for image in x]
        assert [k for _, k in picked] == decided.tolist()
        assert all(torch.allclose(logits, want[k][i], atol=1e-5)
                   for i, (logits, k) in enumerate(picked))
    assert set(decided.tolist()) == {0, 1}  # the median threshold: both exits answer


@pytest.mark.slow
def test_onnx_has_every_exit_and_an_onnxruntime_early_exit_loop_decides_as_the_rule(
        run_dir: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    done = export(run_dir, "onnx", tmp_path / "m.onnx")
    assert done.max_abs_diff is not None and done.max_abs_diff < 1e-4
    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["criterion"] == "max_softmax"
    assert props["thresholds"] == [load_run(run_dir).best().metrics["threshold0"]]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["exit0", "exit1"]
    x = inputs(run_dir)
    with torch.no_grad():
        want = load_run(run_dir).build().forward_exits(x)
    outs = session.run(None, {"input": x.numpy()})
    assert all(np.abs(o - w.numpy()).max() < 1e-4 for o, w in zip(outs, want))
    for taus in [props["thresholds"], settings(run_dir, want)[1]]:
        decisions = []
        for image in x.numpy():  # a deployer's loop: the first exit confident enough
            exits = session.run(None, {"input": image[None]})
            for k, logits in enumerate(exits):
                p = np.exp(logits[0] - logits[0].max())
                if k == len(taus) or (p / p.sum()).max() >= taus[k]:
                    decisions.append(k)
                    break
        assert decisions == rule(want, taus).tolist()
