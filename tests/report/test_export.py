"""epnas export and epnas predict, run as a user runs them, on a real run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import epnas
from epnas.report.export import export_model
from epnas.runs import trial_weights_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def epnas_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epnas", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def scramble(model: torch.nn.Module, shape: tuple[int, ...], seed: int = 0) -> dict:
    """Weights unlike the initial ones, and batch-norm statistics measured on data as
    training leaves them, so an export that dropped or mixed up a tensor gives other
    outputs while the outputs keep a trained network's scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(param * (1 + 0.3 * noise) if "bias" not in name else 0.1 * noise)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.randn(16, *shape, generator=gen))
        for norm in norms:
            norm.momentum = 0.1
    return model.eval().state_dict()


@pytest.fixture(scope="module")
def trained(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A copy of the tiny run whose best trial has saved weights (trials/<id>/model.pt)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run_dir)
    run = epnas.load_run(run_dir)
    trial = run.best() or run.best(feasible=False)
    assert trial is not None
    path = trial_weights_path(run_dir, trial.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(scramble(run.build(trial.id, weights=False), (1, 8, 8)), path)
    return run_dir, trial.id


Export = Callable[[str], tuple[Path, dict]]  # format -> (path, the CLI's --json report)


@pytest.fixture(scope="module")
def exported(trained: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Exports the trained trial by the CLI in a format, once per format (on first use):
    format -> (path, the command's --json report)."""
    run_dir, trial = trained
    root = tmp_path_factory.mktemp("exported")
    outs = {"onnx": root / "model.onnx", "torchscript": root / "model.pt",
            "pytorch": root / "deploy", "json": root / "best.json"}
    done: dict[str, tuple[Path, dict]] = {}

    def export(fmt: str) -> tuple[Path, dict]:
        if fmt not in done:
            result = epnas_cli("export", str(run_dir), "--trial", str(trial), "--format", fmt,
                               "--out", str(outs[fmt]), "--json")
            assert result.returncode == 0, result.stderr
            done[fmt] = (outs[fmt], json.loads(result.stdout))
        return done[fmt]

    return export


def batch(shape: tuple[int, ...], n: int = 3) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def reference(run_dir: Path, trial: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return epnas.load_run(run_dir).build(trial)(x)


def test_onnx_export_matches_torch_and_carries_metadata(trained: tuple[Path, int],
                                                        exported: Export) -> None:
    run_dir, trial = trained
    out, report = exported("onnx")
    assert report["max_abs_diff"] < 1e-4 and report["metadata"]["weights"] == "trial"
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["input_shape"] == [1, 8, 8] and props["classes"] == [str(d) for d in range(10)]
    data = epnas.data.load("digits")
    assert props["mean"] == pytest.approx(data.mean) and props["std"] == pytest.approx(data.std)
    assert epnas.load_genome(props["genome"]) == epnas.load_run(run_dir).genome(trial)
    assert json.loads((out.parent / "model.meta.json").read_text())["classes"] == \
        props["classes"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = batch((1, 8, 8), 5)  # another batch size than the export's example
    (got,) = session.run(None, {"input": x.numpy()})
    assert np.abs(got - reference(run_dir, trial, x).numpy()).max() < 1e-4


@pytest.mark.slow  # the everyday subset exports ONNX and plain PyTorch
def test_torchscript_export_loads_with_torch_jit_and_matches(trained: tuple[Path, int],
                                                             exported: Export) -> None:
    run_dir, trial = trained
    out, _ = exported("torchscript")
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["input_shape"] == [1, 8, 8]
    x = batch((1, 8, 8))
    with torch.no_grad():
        assert torch.allclose(module(x), reference(run_dir, trial, x), atol=1e-5)


def test_pytorch_export_runs_in_a_fresh_interpreter_without_epnas(
        trained: tuple[Path, int], exported: Export, tmp_path: Path) -> None:
    run_dir, trial = trained
    out, _ = exported("pytorch")
    header = (out / "model.py").read_text()
    assert "import epnas" not in header and "from epnas" not in header
    assert "MEAN = (" in header and "CLASSES = ('0'" in header and "INPUT_SHAPE = (1, 8, 8)" \
        in header
    x = batch((1, 8, 8))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(out)!r})
        import torch
        import model
        assert not any(name.startswith("epnas") for name in sys.modules)
        net = model.load()
        with torch.no_grad():
            torch.save(net(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
        print(model.INPUT_SHAPE, model.CLASSES[0])
    """)
    # -I: no PYTHONPATH, no user site, no current directory: epnas cannot be imported.
    fresh = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                           text=True, cwd=tmp_path, env=ENV, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == ["(1,", "8,", "8)", "0"]
    got = torch.load(tmp_path / "y.pt")
    assert torch.allclose(got, reference(run_dir, trial, x), atol=1e-6)


@pytest.mark.slow
def test_json_export_is_a_genome_file_with_costs(trained: tuple[Path, int],
                                                 exported: Export) -> None:
    run_dir, trial = trained
    out, _ = exported("json")
    data = json.loads(out.read_text())
    genome = epnas.load_genome(out.read_text())
    assert genome == epnas.load_run(run_dir).genome(trial)
    assert data["cost"]["params"] == epnas.cost(genome, (1, 8, 8), 10).params
    shown = epnas_cli("show", "--genome", str(out), "--input-shape", "1,8,8")
    assert shown.returncode == 0, shown.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three digits as a 32x32 grey PNG, an RGB JPEG and an 8x8 PNG."""
    root = tmp_path_factory.mktemp("images")
    digits = load_digits().images
    pixels = [Image.fromarray(np.rint(d * 255 / 16).astype(np.uint8)) for d in digits[:3]]
    paths = [root / "a.png", root / "b.jpg", root / "c.png"]
    pixels[0].resize((32, 32)).save(paths[0])
    pixels[1].convert("RGB").resize((24, 24)).save(paths[1], quality=95)
    pixels[2].save(paths[2])
    return paths


def expected_top(run_dir: Path, trial: int, paths: list[Path], k: int) -> list[list[str]]:
    """Top-k classes computed here: the image converted and resized as documented."""
    run = epnas.load_run(run_dir)
    batch = []
    for path in paths:
        image = Image.open(path).convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        batch.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())[None])
    mean, std = run.data.mean[0], run.data.std[0]
    x = (torch.stack(batch).float() / 255 - mean) / std
    with torch.no_grad():
        logits = run.build(trial)(x)
    return [[str(int(i)) for i in row] for row in logits.topk(k, dim=1).indices]


def test_predict_agrees_on_run_dir_onnx_and_pytorch_export(trained: tuple[Path, int],
                                                           exported: Export,
                                                           images: list[Path]) -> None:
    run_dir, trial = trained
    onnx_file, deployed = exported("onnx")[0], exported("pytorch")[0]
    want = expected_top(run_dir, trial, images, 2)
    answers = []
    for model in (onnx_file, deployed):
        result = epnas_cli("predict", str(model), *map(str, images), "--top-k", "2", "--json")
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["image"] for r in rows] == [str(p) for p in images]
        assert [[t["class"] for t in r["top"]] for r in rows] == want
        answers.append([[t["probability"] for t in r["top"]] for r in rows])
    assert np.allclose(answers[0], answers[1], atol=1e-4)
    best = epnas.load_run(run_dir).best()
    if best is not None and best.id == trial:  # the run dir predicts with its best trial
        result = epnas_cli("predict", str(run_dir), *map(str, images), "--top-k", "2")
        assert result.returncode == 0, result.stderr
        assert f"{images[0]}: {want[0][0]} " in result.stdout


def test_predict_and_export_errors_are_one_line(tiny_run: Path, images: list[Path],
                                                tmp_path: Path) -> None:
    for args in (("predict", str(images[0]), str(images[1])),
                 ("export", str(tiny_run), "--trial", "99", "--format", "json", "--out",
                  str(tmp_path / "x.json"))):
        result = epnas_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("epnas: error:") and result.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("space", epnas.spaces.names())
def test_every_space_exports_to_onnx_torchscript_and_plain_pytorch(space: str,
                                                                   tmp_path: Path) -> None:
    shape = (3, 16, 16)
    rng = np.random.default_rng(7)
    sampler = epnas.spaces.get(space)
    diffs = {}
    for i in range(2):
        genome = sampler.sample(rng)
        model = epnas.build(genome, shape, 10)
        scramble(model, shape, i)
        meta = {"trial": i, "key": genome.key, "space": space, "dataset": None,
                "input_shape": list(shape), "num_classes": 10,
                "classes": [f"c{k}" for k in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3,
                "genome": genome.to_dict()}
        x = batch(shape, 4)
        with torch.no_grad():
            want = model.eval()(x)
        onnx_done = export_model(model, meta, "onnx", tmp_path / f"{i}.onnx")
        session = onnxruntime.InferenceSession(str(tmp_path / f"{i}.onnx"),
                                               providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[-1]  # multi-exit: the last
        diffs[genome.key] = float(np.abs(got - want.numpy()).max())
        assert diffs[genome.key] < 1e-4 and onnx_done.max_abs_diff < 1e-4
        script = export_model(model, meta, "torchscript", tmp_path / f"{i}.pt")
        assert script.max_abs_diff is not None and script.max_abs_diff < 1e-5
        export_model(model, meta, "pytorch", tmp_path / f"py{i}")
        probe = textwrap.dedent(f"""
            import sys, torch
            sys.path.insert(0, {str(tmp_path / f'py{i}')!r})
            import model
            x = torch.load({str(tmp_path / 'x.pt')!r})
            with torch.no_grad():
                torch.save(model.load()(x), {str(tmp_path / 'y.pt')!r})
        """)
        torch.save(x, tmp_path / "x.pt")
        fresh = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                               text=True, env=ENV, timeout=120)
        assert fresh.returncode == 0, fresh.stderr
        assert torch.allclose(torch.load(tmp_path / "y.pt"), want, atol=1e-5)
    print(f"ONNX max abs diff, {space}: {diffs}")
