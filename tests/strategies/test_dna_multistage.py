"""The dna strategy on the multistage space: a trained multistage teacher, its stages as
blocks, and the assembled network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import epnas
from epnas.cli import main
from epnas.data import load
from epnas.evaluators import DistillEvaluator
from epnas.evaluators.distill import load_parts
from epnas.spaces import Block
from epnas.spaces.multistage import MultistageOptions
from epnas.supernet import Supernet
from epnas.trial import Candidate
from tests.evaluators.test_distill import one_thread  # noqa: F401  (one torch thread)

OPTIONS = {"stages": 2, "widths": (8, 16), "strides": (1, 2), "depths": (1, 2),
           "kernels": (3, 5), "expands": (2, 4), "resolutions": (8, 12)}
SPACE_OPTS = ["stages=2", "widths=8,16", "strides=1,2", "depths=1,2", "kernels=3,5",
              "expands=2,4", "resolutions=8,12"]


def train_teacher(directory: Path) -> Path:
    """A tiny multistage network trained a few steps on digits, saved as ``epnas retrain``
    leaves one (genome.json + model.pt)."""
    space = epnas.spaces.get("multistage", **OPTIONS)
    genome = space.genome(8, [[Block(3, 4)], [Block(5, 4), Block(3, 2)]])
    data = load("digits")
    torch.manual_seed(0)
    model = space.build(genome, data.input_shape, data.num_classes).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.normalised(data.train_x), data.train_y
    for step in range(30):
        batch = slice(64 * step % len(x), 64 * step % len(x) + 64)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    (directory / "genome.json").write_text(genome.to_json())
    return directory


def test_search_with_a_multistage_teacher(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    teacher = train_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    argv = ["search", "--space", "multistage", *(a for o in SPACE_OPTS for a in
                                                 ("--space-opt", o)),
            "--strategy", "dna", "--strategy-opt", "per_block=2", "--evaluator", "distill",
            "--evaluator-opt", f"teacher={teacher}", "--evaluator-opt", "samples=128",
            "--evaluator-opt", "epochs=1", "--evaluator-opt", "schedule={epochs: 1}",
            "--dataset", "digits", "--trials", "10", "--max-params", "6k", "--out", str(out),
            "--quiet", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 5  # 2 stages x 2 parts + the assembled network
    best = summary["best"]
    assert best["fidelity"] == "prediction" and best["info"]["origin"] == "assembled"
    assert best["feasible"] and best["metrics"]["params"] <= 6_000
    space = epnas.spaces.get("multistage", **OPTIONS)
    genome = space.genome_from_dict(best["genome"])
    # the teacher's 8x8 stage outputs allow only its resolution
    assert genome.resolution == 8
    assert best["metrics"]["params"] == space.cost(genome, (1, 8, 8), 10).params


def test_a_supernet_sub_network_saved_as_a_model_is_a_teacher(tmp_path: Path) -> None:
    # what a supernet search's trial keeps: trials/<id>/model.pt, its genome exported
    torch.manual_seed(0)
    supernet = Supernet(MultistageOptions(**OPTIONS), 1, 10)
    genome = supernet.largest()
    torch.save(supernet.subnet(genome).state_dict(), tmp_path / "model.pt")
    (tmp_path / "genome.json").write_text(genome.to_json())
    evaluator = DistillEvaluator(str(tmp_path / "model.pt"), samples=64, epochs=1,
                                 teacher_genome=str(tmp_path / "genome.json"))
    assert evaluator.block_plan() == [((1, 8, 8), (8, 12, 12)), ((8, 12, 12), (16, 6, 6))]
    space = epnas.spaces.get("multistage", **OPTIONS)
    rng = np.random.default_rng(0)
    for k, (inp, out) in enumerate(evaluator.block_plan()):
        part = space.sample_block(rng, k, 2, inp, out)
        result = evaluator.evaluate(Candidate(part, f"block={k}", {"block": k, "part": 0}))
        assert result.status == "done" and result.metrics["distill_loss"] >= 0


def test_the_assembled_multistage_network_starts_from_its_stages_and_learns_from_the_teacher(
        tmp_path: Path) -> None:
    teacher = train_teacher(tmp_path / "teacher")
    evaluator = DistillEvaluator(str(teacher), samples=128, epochs=1, init="parts", kd=0.5,
                                 schedule={"epochs": 1})
    space = epnas.spaces.get("multistage", **OPTIONS)
    rng = np.random.default_rng(1)
    parts = [space.sample_block(rng, k, 2, inp, out)
             for k, (inp, out) in enumerate(evaluator.block_plan())]
    for k, part in enumerate(parts):
        assert evaluator.evaluate(Candidate(part, f"block={k}")).ok
    genome = space.assemble(parts)
    model = space.build(genome, (1, 8, 8), 10)
    states = [evaluator.part_state(k, part.key) for k, part in enumerate(parts)]
    assert load_parts(genome, model, states, (1, 8, 8)) == {"init_blocks": 2.0,
                                                            "init_tensors": 1.0}
    weights = model.state_dict()
    assert torch.equal(weights["stem.0.weight"], states[0]["weights"]["stem.0.weight"])
    last = f"stages.1.{len(genome.stages[1]) - 1}.project.0.weight"
    assert torch.equal(weights[last], states[1]["weights"][last.replace("stages.1", "blocks")])
    # the exits stay fresh; kd trains every exit on the teacher's logits
    result = evaluator.evaluate(Candidate(genome, "prediction",
                                          {"part_keys": [p.key for p in parts]}))
    assert result.status == "done" and result.metrics["init_blocks"] == 2
