"""Classify image files with a searched network: ``epnas predict MODEL_OR_RUN_DIR IMAGE...``.

The model is a run directory (the retrained network in ``final/``, else the best
trial's saved weights), an exported ONNX file, an exported TorchScript file, or the
directory of a ``--format pytorch`` export. Images (PNG, JPEG, anything pillow reads)
are converted to the model's channels, resized to its input size and normalised with
the mean/std stored with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console

from epnas.errors import EpnasError
from epnas.flags import emit_json
from epnas.report.export import METADATA_FILE
from epnas.runs import load_run
from epnas.store import DB_NAME

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Predictor:
    """A loaded model and how to feed it.

    Attributes:
        forward: normalised float images ``[N, C, H, W]`` to logits ``[N, classes]``.
        input_shape: ``(C, H, W)``.
        mean, std: per-channel normalisation of [0, 1]-scaled pixels.
        classes: class names by output index.
        source: what was loaded, for messages.
    """

    forward: Forward
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    source: str

    def images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files as the normalised batch the model takes."""
        c, h, w = self.input_shape
        batch = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    image = image.convert("L" if c == 1 else "RGB")
                    image = image.resize((w, h), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.uint8).reshape(h, w, -1)
            except (OSError, UnidentifiedImageError) as exc:
                raise EpnasError(f"cannot read image {path}: {exc}") from None
            if pixels.shape[2] != c:
                raise EpnasError(f"the model takes {c} channels; cannot convert {path}")
            batch.append(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
        x = torch.stack(batch).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def top_k(self, paths: Sequence[str | Path], k: int = 3) -> list[list[tuple[str, float]]]:
        """Per image: the ``k`` most probable classes and their probabilities."""
        with torch.no_grad():
            probs = torch.softmax(self.forward(self.images(paths)).float(), dim=1)
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(self.classes[i], float(p)) for p, i in zip(values, indices.tolist())]
                for values, indices in zip(top.values, top.indices)]


def load_predictor(path: str | Path) -> Predictor:
    """A :class:`Predictor` for a run directory or an exported model (see the module doc).

    Raises:
        EpnasError: ``path`` is none of those, or the model cannot be loaded.
    """
    path = Path(path)
    if (path / DB_NAME).is_file():
        return _from_run(path)
    if (path / "model.py").is_file():
        return _from_pytorch(path)
    if path.is_file() and path.suffix == ".onnx":
        return _from_onnx(path)
    if path.is_file():
        return _from_torchscript(path)
    raise EpnasError(f"{path} is neither a run directory, an ONNX or TorchScript file, nor "
                     "a directory exported with --format pytorch")


def _predictor(forward: Forward, meta: dict[str, Any], source: str) -> Predictor:
    try:
        return Predictor(forward, tuple(meta["input_shape"]), tuple(meta["mean"]),
                         tuple(meta["std"]), tuple(meta["classes"]), source)
    except (KeyError, TypeError) as exc:
        raise EpnasError(f"{source} lacks the metadata to preprocess images ({exc})") from None


def _from_run(path: Path) -> Predictor:
    run = load_run(path)
    final = run.final
    trial = final["trial"] if final is not None else None
    if trial is None:
        best = run.best()
        trial = best.id if best is not None else None
    if trial is None or run.weights(trial) is None:
        raise EpnasError(f"{path} has no trained weights of its best trial; run "
                         f"`epnas retrain {path}` first")
    model = run.build(trial)
    where = "final/" if final is not None else f"trial {trial}"
    return _predictor(model, run.metadata(trial), f"{path} ({where})")


def _from_onnx(path: Path) -> Predictor:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise EpnasError("predicting with ONNX models needs onnx and onnxruntime: "
                         "pip install 'epnas[export]'") from None
    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
        meta = {p.key: json.loads(p.value) for p in props}
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and onnxruntime raise their own error types
        raise EpnasError(f"cannot load ONNX model {path}: {exc}".splitlines()[0]) from None
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[-1])  # the last exit

    return _predictor(forward, meta, str(path))


def _from_torchscript(path: Path) -> Predictor:
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError and others for foreign files
        raise EpnasError(f"{path} is neither a run directory, an ONNX or TorchScript file, "
                         "nor a directory exported with --format pytorch") from exc
    if not extra[METADATA_FILE]:
        raise EpnasError(f"{path} has no {METADATA_FILE}: export it with epnas export")
    return _predictor(module.eval(), json.loads(extra[METADATA_FILE]), str(path))


def _from_pytorch(path: Path) -> Predictor:
    # A unique module name: two exports loaded in one process must not collide.
    spec = importlib.util.spec_from_file_location(f"epnas_export_{uuid.uuid4().hex}",
                                                  path / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        net = module.load()
    except Exception as exc:  # the user's file: report whatever it raises in one line
        raise EpnasError(f"cannot load {path / 'model.py'}: {exc}".splitlines()[0]) from None
    meta = {"input_shape": module.INPUT_SHAPE, "mean": module.MEAN, "std": module.STD,
            "classes": module.CLASSES}
    return _predictor(net, meta, str(path / "model.py"))


# --- command line ------------------------------------------------------------------------

def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise EpnasError("--top-k must be at least 1")
    predictor = load_predictor(args.model)
    results = predictor.top_k(args.images, args.top_k)
    if args.json:
        emit_json(args, [json.dumps({"image": str(image), "top": [
            {"class": name, "probability": p} for name, p in top]})
            for image, top in zip(args.images, results)])
        return 0
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"model: {predictor.source}")
    for image, top in zip(args.images, results):
        ranked = "  ".join(f"{name} {100 * p:.1f}%" for name, p in top)
        console.print(f"{image}: {ranked}")
    return 0


def add_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``epnas predict``."""
    p = sub.add_parser("predict", help="classify image files with a run's or an exported model",
                       description="Print the most probable classes of image files. MODEL is a "
                                   "run directory (retrained or best trial weights), an ONNX "
                                   "or TorchScript file, or a --format pytorch export "
                                   "directory.")
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG, ... files")
    p.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="classes to show per image (default 3)")
    json_flag(p)
    p.set_defaults(func=cmd_predict)
