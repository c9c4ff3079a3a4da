"""Export a searched network for deployment: ``epnas export RUN_DIR --format F --out PATH``.

Formats:

* ``onnx``: an ONNX file (``torch.onnx.export``, batch dimension dynamic), checked
  against torch with onnxruntime when it is installed;
* ``torchscript``: a traced TorchScript file for ``torch.jit.load``;
* ``pytorch``: a directory with a standalone ``model.py`` (plain PyTorch generated from
  the network, :mod:`epnas.report.codegen`) and ``model.pt`` (its ``state_dict``);
* ``json``: the genome with its costs (still a valid ``--genome FILE``).

Each carries what a deployer needs: input shape, normalisation mean/std, class names
(ONNX ``metadata_props``, TorchScript extra file ``metadata.json``, the ``model.py``
header) and a sidecar ``<name>.meta.json`` with the same fields. The weights are the
retrained ones (``final/``) for the retrained trial, else the trial's own when the search
kept them; without any, the export says so and carries freshly initialised weights.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from epnas._version import __version__
from epnas.errors import EpnasError, storage_error
from epnas.flags import emit_json
from epnas.report import codegen
from epnas.runs import Run, add_trial_arguments, load_run
from epnas.spaces.registry import cost, load_genome, space_of
from epnas.train.sharing import save_atomic

FORMATS = ("onnx", "torchscript", "pytorch", "json")
METADATA_FILE = "metadata.json"  # inside TorchScript archives
SIDE_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class Export:
    """What :func:`export` wrote.

    Attributes:
        files: the files written, the main one first.
        metadata: the deployment metadata every format carries.
        max_abs_diff: largest absolute difference of the exported model's outputs from
            torch's on a random batch (None where not checked).
    """

    files: list[Path]
    metadata: dict[str, Any]
    max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)


def metadata(run: Run, trial_id: int | None = None) -> dict[str, Any]:
    """The deployment metadata of a trial: :meth:`Run.metadata`, the genome, its costs, and
    where the weights come from (``weights``: ``final``, ``trial`` or ``untrained``)."""
    meta = run.metadata(trial_id)
    trial = run.trial(meta["trial"])
    path = run.weights(trial.id)
    source = "untrained" if path is None else ("final" if path.parent.name == "final"
                                               else "trial")
    shape = tuple(meta["input_shape"])
    return {**meta, "weights": source, "epnas": __version__,
            "genome": trial.genome.to_dict(),
            "cost": cost(trial.genome, shape, meta["num_classes"]).as_dict(),
            **run.early_exit(trial.id)}


def export(run: Run | str | Path, fmt: str, out: str | Path,
           trial_id: int | None = None) -> Export:
    """Export a trial's network (None: the best feasible one) in format ``fmt`` to ``out``.

    Raises:
        EpnasError: unknown format or trial, a network the format cannot hold, an
            unwritable ``out``, or a missing optional package (``pip install epnas[export]``).
    """
    run = run if isinstance(run, Run) else load_run(run)
    meta = metadata(run, trial_id)
    done = export_model(run.build(meta["trial"]), meta, fmt, out)
    if meta["weights"] == "untrained":
        done.notes.append(f"trial {meta['trial']} has no trained weights in {run.path}: the "
                          "export holds its initial weights; run `epnas retrain` first")
    return done


def export_model(model: nn.Module, meta: dict[str, Any], fmt: str, out: str | Path) -> Export:
    """Export a built network with its deployment metadata (as :func:`metadata` gives:
    at least ``input_shape``, ``mean``, ``std``, ``classes``, ``genome``, ``key``,
    ``space``, ``trial``, ``dataset``) in format ``fmt`` to ``out``.

    Raises:
        EpnasError: as :func:`export`.
    """
    if fmt not in FORMATS:
        raise EpnasError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    model.eval()
    try:
        if fmt == "pytorch":
            out.mkdir(parents=True, exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
        result = _WRITERS[fmt](model, meta, out)
        side = (out / "model" if fmt == "pytorch" else out).with_suffix(SIDE_SUFFIX)
        side.write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as exc:  # read-only, full, no permission: storage error: PATH: CAUSE
        raise storage_error(exc, out) or EpnasError(
            f"cannot write {exc.filename or out}: {exc.strerror}") from None
    return Export([*result.files, side], meta, result.max_abs_diff, list(result.notes))


def _example(meta: dict[str, Any], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *meta["input_shape"], generator=torch.Generator().manual_seed(0))


def _onnx(model: nn.Module, meta: dict[str, Any], out: Path) -> Export:
    try:
        import onnx
    except ImportError:
        raise EpnasError("ONNX export needs the onnx and onnxscript packages: "
                         "pip install 'epnas[export]'") from None
    x = _example(meta)
    names = output_names(model, meta)
    if len(names) > 1:
        model = _Exits(model).eval()
    # The exporter logs warnings about optional torchvision operators on every call.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
            torch.onnx.export(model, (x,), str(out), input_names=["input"],
                              output_names=names, dynamo=True, verbose=False,
                              external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
    except ImportError as exc:
        raise EpnasError(f"ONNX export needs {exc.name}: pip install 'epnas[export]'") from None
    finally:
        registration.setLevel(level)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(out))
    diff, notes = None, []
    try:
        diff = max(_onnx_diff(model, out, meta, batch) for batch in (1, 3))
    except ImportError:
        notes.append("onnxruntime is not installed: the ONNX file was not checked")
    return Export([out], meta, diff, notes)


def output_names(model: nn.Module, meta: dict[str, Any]) -> list[str]:
    """The ONNX outputs: ``exit0..exitK`` for a network with an exit after every stage
    (``forward_exits``), else ``logits``."""
    if not hasattr(model, "forward_exits"):
        return ["logits"]
    with torch.no_grad():
        return [f"exit{k}" for k in range(len(model.forward_exits(_example(meta, 1))))]


class _Exits(nn.Module):
    """A multi-exit network whose forward returns every exit's logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net.forward_exits(x))


def _onnx_diff(model: nn.Module, path: Path, meta: dict[str, Any], batch: int) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _example(meta, batch)
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x)
    want = list(want) if isinstance(want, tuple) else [want]
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))


def _torchscript(model: nn.Module, meta: dict[str, Any], out: Path) -> Export:
    x = _example(meta)
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is deprecated upstream but is what this format asks for.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, (x,))
        # through memory: a plain write reports a read-only or full disk as an OSError
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(meta)})
        out.write_bytes(buffer.getvalue())
        loaded = torch.jit.load(str(out))
        y = _example(meta, 3)
        diff = float((loaded(y) - model(y)).abs().max())
    return Export([out], meta, diff)


def _pytorch(model: nn.Module, meta: dict[str, Any], out: Path) -> Export:
    genome = load_genome(meta["genome"])
    source = codegen.generate(
        model, meta, title=f"{meta['space']} network {meta['key']} (trial {meta['trial']}"
                           f"{', dataset ' + meta['dataset'] if meta['dataset'] else ''})",
        describe=space_of(genome).describe(genome), weights="model.pt",
        version=__version__)
    (out / "model.py").write_text(source)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic(state, out / "model.pt")
    return Export([out / "model.py", out / "model.pt"], meta)


def _json(model: nn.Module, meta: dict[str, Any], out: Path) -> Export:
    # The genome file format with its cost annotation, which genome loaders ignore.
    out.write_text(json.dumps({**meta["genome"], "cost": meta["cost"]}) + "\n")
    return Export([out], meta)


_WRITERS: dict[str, Callable[[nn.Module, dict[str, Any], Path], Export]] = {
    "onnx": _onnx, "torchscript": _torchscript, "pytorch": _pytorch, "json": _json}


# --- command line ------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json == "-", highlight=False, soft_wrap=True)
    done = export(args.run_dir, args.format, args.out, args.trial)
    for note in done.notes:
        console.print(f"epnas: note: {note}")
    if args.json:
        emit_json(args, [json.dumps({"files": [str(f) for f in done.files],
                                      "max_abs_diff": done.max_abs_diff,
                                      "metadata": done.metadata})])
    if args.json != "-":
        meta = done.metadata
        console.print(f"exported trial {meta['trial']} ({meta['key']}, {meta['weights']} "
                      f"weights) as {args.format}: {', '.join(map(str, done.files))}")
        if done.max_abs_diff is not None:
            console.print(f"max abs difference from torch: {done.max_abs_diff:.3g}")
    return 0


def add_command(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``epnas export``."""
    p = sub.add_parser("export", help="export a searched network (ONNX, TorchScript, "
                                      "plain PyTorch, genome JSON)",
                       description="Export the best (or a chosen) trial's network with its "
                                   "trained weights and deployment metadata (input shape, "
                                   "mean/std, class names).")
    add_trial_arguments(p)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="PATH",
                   help="file to write (a directory for --format pytorch)")
    json_flag(p)
    p.set_defaults(func=cmd_export)
