"""The distill evaluator (DNA): teachers, block trials and their ratings, on tiny data."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import epnas
from epnas import EpnasError
from epnas.data import load
from epnas.evaluators import DistillEvaluator
from epnas.evaluators.teacher import TeacherError
from epnas.spaces.layerwise import Layer
from epnas.trial import Candidate

SPACE = epnas.spaces.get("layerwise", max_layers=6, channels=(8, 16))
DIGITS = (1, 8, 8)


def teacher_genome() -> epnas.Genome:
    """conv -> pool | conv -> pool | conv: three stages."""
    return SPACE.genome([Layer(1, "conv", 0, -1, 3, 16, "relu"), Layer(2, "maxpool", 1, -1, 2),
                         Layer(3, "conv", 2, -1, 3, 16, "relu"), Layer(4, "maxpool", 3, -1, 2),
                         Layer(5, "conv", 4, -1, 3, 8, "relu")])


def save_teacher(directory: Path, genome: epnas.Genome | None = None) -> Path:
    """A seeded epnas teacher as ``epnas retrain`` leaves one, its batch norms calibrated
    on digits (its features then have a trained network's scale; for these tests they
    are as good a target as a trained network's)."""
    genome = genome or teacher_genome()
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = epnas.build(genome, DIGITS, 10)
    data = load("digits")
    x = data.train_x[:512].float().div(255)
    x = (x - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the calibration pass
    with torch.no_grad():
        model.train()(x)
    torch.save(model.state_dict(), directory / "model.pt")
    (directory / "genome.json").write_text(genome.to_json())
    return directory


_SCRATCH = tempfile.TemporaryDirectory(prefix="epnas-teacher-")  # removed at exit


def contract_case() -> DistillEvaluator:
    """The evaluator contract's case (tests/evaluators/test_contract.py)."""
    teacher = Path(_SCRATCH.name)
    if not (teacher / "model.pt").exists():
        save_teacher(teacher)
    return DistillEvaluator(str(teacher), "digits", schedule={"epochs": 1}, samples=200)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny blocks train many times faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def part(*layers: Layer) -> epnas.Genome:
    return SPACE.genome(list(layers))


CONV = Layer(1, "conv", 0, -1, 3, 16, "relu")
POOL = Layer(2, "maxpool", 1, -1, 2)


def test_the_block_plan_follows_the_teachers_stages(teacher: Path) -> None:
    evaluator = DistillEvaluator(str(teacher), samples=64)
    evaluator.prepare()
    assert evaluator.block_plan() == [(DIGITS, (16, 4, 4)), ((16, 4, 4), (16, 2, 2)),
                                      ((16, 2, 2), (8, 2, 2))]
    evaluator.check_fidelity("block=2")
    with pytest.raises(EpnasError, match=r"blocks 0\.\.2"):
        evaluator.check_fidelity("block=3")


def test_training_a_block_reduces_its_distillation_loss(teacher: Path) -> None:
    candidate = Candidate(part(CONV, POOL), "block=0", {})
    # seed 1: the block's initial weights are not the teacher's (built from seed 0)
    untrained = DistillEvaluator(str(teacher), samples=256, epochs=1, lr=1e-9, seed=1)
    trained = DistillEvaluator(str(teacher), samples=256, epochs=6, lr=1e-2, batch_size=32,
                               seed=1)
    before, after = untrained.evaluate(candidate), trained.evaluate(candidate)
    assert before.status == after.status == "done"
    assert after.metrics["distill_loss"] < 0.5 * before.metrics["distill_loss"]
    assert 0 <= before.metrics["accuracy"] < after.metrics["accuracy"] <= 1
    assert after.metrics["block"] == 0 and after.metrics["params"] > 0


def test_losses_caching_and_a_coarser_part(teacher: Path) -> None:
    candidate = Candidate(part(CONV), "block=2", {})
    cached = DistillEvaluator(str(teacher), samples=128, epochs=2).evaluate(candidate)
    fresh = DistillEvaluator(str(teacher), samples=128, epochs=2, cache=False).evaluate(candidate)
    assert cached.metrics["distill_loss"] == pytest.approx(fresh.metrics["distill_loss"],
                                                           rel=1e-4)
    raw = DistillEvaluator(str(teacher), samples=128, epochs=2, loss="mse").evaluate(candidate)
    assert raw.status == "done" and 0 <= raw.metrics["accuracy"] <= 1
    coarse = DistillEvaluator(str(teacher), samples=64).evaluate(
        Candidate(part(POOL.__class__(1, "maxpool", 0, -1, 2)), "block=2", {}))
    assert coarse.status == "failed" and "coarser than the teacher's 2x2" in coarse.error


def test_an_affine_readout_fits_the_scale_of_a_parameter_free_part(teacher: Path) -> None:
    lone_pool = Candidate(part(Layer(1, "maxpool", 0, -1, 2)), "block=1", {})  # 16x4x4 -> 2x2
    plain = DistillEvaluator(str(teacher), samples=128, epochs=2).evaluate(lone_pool)
    affine = DistillEvaluator(str(teacher), samples=128, epochs=2,
                              readout="affine").evaluate(lone_pool)
    assert plain.status == affine.status == "done"
    assert plain.metrics["epochs"] == 0 and affine.metrics["epochs"] == 2  # nothing to train
    assert affine.metrics["distill_loss"] < plain.metrics["distill_loss"]
    assert affine.metrics["params"] == plain.metrics["params"] == 0  # the part's own costs
    with pytest.raises(EpnasError, match="readout"):
        DistillEvaluator(str(teacher), readout="conv")


def test_a_user_module_teacher_with_named_blocks(tmp_path: Path) -> None:
    source = tmp_path / "teacher.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def make_teacher():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),\n"
        "                         nn.Linear(128, 10))\n")
    spec = f"{source}:make_teacher"
    evaluator = DistillEvaluator(spec, samples=64, epochs=1, blocks=["2", "3"])
    assert evaluator.block_plan() == [(DIGITS, (8, 4, 4)), ((8, 4, 4), (8, 4, 4))]
    result = evaluator.evaluate(Candidate(part(CONV, POOL), "block=0", {}))
    assert result.status == "done"
    with pytest.raises(TeacherError, match="no module named 9"):
        DistillEvaluator(spec, blocks=["2", "9"]).prepare()
    with pytest.raises(TeacherError, match="ran before"):
        DistillEvaluator(spec, blocks=["3", "2"]).prepare()
    with pytest.raises(TeacherError, match="name the modules that end its blocks"):
        DistillEvaluator(spec).prepare()


def test_teacher_files_are_checked(tmp_path: Path, teacher: Path) -> None:
    with pytest.raises(TeacherError, match=r"genome\.json is missing; give the trial's genome"):
        DistillEvaluator(str(teacher / "model.pt"), teacher_genome=str(tmp_path / "genome.json")
                         ).prepare()
    other = save_teacher(tmp_path / "other", SPACE.sample(np.random.default_rng(0)))
    (other / "genome.json").write_text(teacher_genome().to_json())  # weights of another net
    with pytest.raises(TeacherError, match="does not fit"):
        DistillEvaluator(str(other)).prepare()
    with pytest.raises(EpnasError, match="loss"):
        DistillEvaluator(str(teacher), loss="l1")
