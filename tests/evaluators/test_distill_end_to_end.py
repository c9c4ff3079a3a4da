"""The distill evaluator's end-to-end trial: blocks started from their parts' distilled
weights (init=parts) and knowledge distillation from the teacher's logits (kd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import epnas
from epnas import EpnasError
from epnas.cli import main
from epnas.evaluators import DistillEvaluator
from epnas.evaluators import training as training_module
from epnas.evaluators.distill import load_parts, part_file
from epnas.retrain import plan
from epnas.spaces.layerwise import Layer
from epnas.trial import Candidate, TrialContext
from tests.evaluators.test_distill import DIGITS, SPACE, one_thread, save_teacher  # noqa: F401

# Teacher blocks on digits: 1x8x8 -> 16x4x4 -> 16x2x2 -> 8x2x2. Part 0 outputs 8 channels
# (a regressor maps them to the teacher's 16), so part 1's first conv, distilled on 16
# channels, reads 8 in the assembled network: it is folded with part 0's regressor.
PARTS = [SPACE.genome([Layer(1, "conv", 0, -1, 3, 8, "relu"), Layer(2, "maxpool", 1, -1, 2)]),
         SPACE.genome([Layer(1, "conv", 0, -1, 3, 16, "relu"), Layer(2, "maxpool", 1, -1, 2)]),
         SPACE.genome([Layer(1, "conv", 0, -1, 3, 8, "relu")])]
TINY = {"epochs": 1}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def rate_parts(evaluator: DistillEvaluator, trials: Path) -> None:
    """Every part of PARTS as a block trial with its own trial directory, as a study runs them."""
    for k, part in enumerate(PARTS):
        result = evaluator.evaluate_trial(Candidate(part, f"block={k}"),
                                          TrialContext(str(trials / str(k + 1))))
        assert result.status == "done"


def assembled() -> Candidate:
    return Candidate(SPACE.assemble(PARTS), "prediction",
                     {"origin": "assembled", "part_keys": [p.key for p in PARTS]})


def test_block_trials_leave_their_weights_and_the_assembly_starts_from_them(
        teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trials = tmp_path / "trials"
    rate_parts(DistillEvaluator(str(teacher), samples=128, epochs=1), trials)
    files = [trials / str(k + 1) / part_file(k, p.key) for k, p in enumerate(PARTS)]
    assert all(f.is_file() for f in files)
    saved = [torch.load(f, weights_only=True) for f in files]
    assert [s["block"] for s in saved] == [0, 1, 2] and saved[1]["input_channels"] == 16

    started: list[dict[str, torch.Tensor]] = []
    real_train = training_module.train

    def spy(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        started.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(training_module, "train", spy)
    # a fresh evaluator (a resumed run's worker): the weights come from the trial files
    fresh = DistillEvaluator(str(teacher), samples=128, epochs=1, schedule=TINY)  # init=parts
    result = fresh.evaluate_trial(assembled(), TrialContext(str(trials / "4")))
    assert result.status == "done"
    assert result.metrics["init_blocks"] == 3 and result.metrics["init_tensors"] == 1.0
    weights = started[0]
    block0, block1, block2 = (s["weights"] for s in saved)
    assert torch.equal(weights["stem.0.weight"], block0["stem.0.weight"])
    assert torch.equal(weights["layers.0.op.0.weight"], block0["layers.0.op.0.weight"])
    assert torch.equal(weights["layers.0.op.1.running_var"], block0["layers.0.op.1.running_var"])
    # part 1's conv read the teacher's 16 channels; here it reads part 0's 8 through the
    # regressor it was distilled behind
    regressor = saved[0]["regressor"]["0.weight"][:, :, 0, 0]  # 16 x 8
    folded = torch.einsum("otij,ts->osij", block1["layers.0.op.0.weight"], regressor)
    assert torch.allclose(weights["layers.2.op.0.weight"], folded)
    assert torch.equal(weights["layers.4.op.0.weight"], block2["layers.0.op.0.weight"])

    # init=scratch, or parts that were never rated, start from the seed
    scratch = DistillEvaluator(str(teacher), samples=128, schedule=TINY, init="scratch")
    assert "init_blocks" not in scratch.evaluate(assembled()).metrics
    started.clear()
    elsewhere = fresh.evaluate_trial(assembled(), TrialContext(str(tmp_path / "other" / "1")))
    assert elsewhere.metrics["init_blocks"] == 0
    assert not torch.equal(started[0]["stem.0.weight"], block0["stem.0.weight"])


def test_parts_rated_in_memory_initialise_without_a_run_directory(teacher: Path) -> None:
    evaluator = DistillEvaluator(str(teacher), samples=128, epochs=1, init="parts",
                                 schedule=TINY)
    for k, part in enumerate(PARTS[:2]):
        assert evaluator.evaluate(Candidate(part, f"block={k}")).ok
    result = evaluator.evaluate(assembled())  # block 2 was not rated: it starts fresh
    assert result.status == "done" and result.metrics["init_blocks"] == 2


def test_a_network_that_does_not_follow_its_blocks_is_refused(teacher: Path) -> None:
    evaluator = DistillEvaluator(str(teacher), samples=128, epochs=1)
    assert evaluator.evaluate(Candidate(PARTS[0], "block=0")).ok
    state = evaluator.part_state(0, PARTS[0].key)
    assert state is not None
    other = epnas.build(SPACE.genome([Layer(1, "conv", 0, -1, 3, 16, "relu")]), DIGITS, 10)
    with pytest.raises(EpnasError, match="does not begin with its blocks' weights"):
        load_parts(SPACE.assemble(PARTS), other, [state], DIGITS)


def test_knowledge_distillation_changes_the_training(teacher: Path) -> None:
    genome = SPACE.assemble(PARTS)
    plain = DistillEvaluator(str(teacher), schedule=TINY).evaluate(Candidate(genome, "prediction"))
    kd = DistillEvaluator(str(teacher), schedule=TINY, kd=0.7, kd_temperature=2)
    taught = kd.evaluate(Candidate(genome, "prediction"))
    assert plain.status == taught.status == "done"
    assert taught.metrics["loss"] != plain.metrics["loss"]
    with pytest.raises(EpnasError, match="kd"):
        DistillEvaluator(str(teacher), kd=1.5)


def test_kd_on_cached_logits_equals_kd_on_the_batch(teacher: Path) -> None:
    evaluator = DistillEvaluator(str(teacher), schedule=TINY, kd=0.5)
    schedule = evaluator.training.schedule("prediction", evaluator.data)
    still = schedule.model_copy(update={"crop_padding": 0, "flip": False, "brightness": 0.0,
                                        "contrast": 0.0, "cutout": 0})
    on_batch, cached = evaluator._kd_criterion(schedule), evaluator._kd_criterion(still)
    idx = torch.arange(5, 37)
    x = evaluator._inputs(evaluator.data.train_x[idx])
    z, y = torch.randn(32, 10), evaluator.data.train_y[idx]
    assert torch.allclose(on_batch(z, y, x, idx), cached(z, y, x, idx), atol=1e-5)
    assert on_batch(z, y, x, idx) != torch.nn.functional.cross_entropy(z, y)


def test_a_teacher_without_logits_fails_the_kd_trial(tmp_path: Path) -> None:
    source = tmp_path / "teacher.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def make_teacher():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2))\n")
    evaluator = DistillEvaluator(f"{source}:make_teacher", blocks=["1"], kd=0.5,
                                 schedule=TINY)
    result = evaluator.evaluate(Candidate(SPACE.assemble(PARTS[:1]), "prediction"))
    assert result.status == "failed" and "needs logits of shape N x 10" in result.error


def test_a_resumed_dna_run_finds_the_part_weights(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    argv = ["search", "--space", "layerwise", "--space-opt", "max_layers=6",
            "--space-opt", "channels=8,16", "--strategy", "dna", "--strategy-opt",
            "per_block=2", "--evaluator", "distill", "--evaluator-opt", f"teacher={teacher}",
            "--evaluator-opt", "samples=200", "--evaluator-opt", "init=parts",
            "--evaluator-opt", "kd=0.5", "--evaluator-opt", "schedule={epochs: 1}",
            "--dataset", "digits", "--trials", "6", "--out", str(out), "--quiet", "--json"]
    assert main(argv) == 0  # the 6 block trials, not the assembled network
    assert json.loads(capsys.readouterr().out)["trials"] == 6
    assert main(["resume", str(out), "--trials", "7", "--quiet", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["best"]
    assert best["info"]["origin"] == "assembled" and len(best["info"]["part_keys"]) == 3
    assert best["metrics"]["init_blocks"] == 3
    # retrained from its parts: at a vanishing learning rate the retrained network keeps
    # the stem its first part distilled
    argv = ["retrain", str(out), "--init", "parts", "--epochs", "1", "--schedule-opt",
            "lr=1e-12", "--json"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["init"] == "parts" and metrics["trial"] == best["id"]
    first = part_file(0, best["info"]["part_keys"][0])
    part = torch.load(next((out / "trials").glob(f"*/{first}")), weights_only=True)
    retrained = torch.load(out / "final" / "model.pt", weights_only=True)
    name, weight = next(iter(part["weights"].items()))
    assert weight.dim() == 4 and torch.allclose(retrained[name], weight, atol=1e-6)
    # a trial that was not assembled has no parts to start from
    with pytest.raises(EpnasError, match="not assembled from parts by the dna strategy"):
        plan(out, 1, init="parts")  # a block trial
    for path in (out / "trials").glob(f"*/{first}"):
        path.unlink()
    with pytest.raises(EpnasError, match=r"trained block of part .* \(block 0\) is not in"):
        plan(out, best["id"], init="parts")
