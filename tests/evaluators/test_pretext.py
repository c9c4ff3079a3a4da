"""UnNAS pretext tasks: their transforms, training without labels, data without labels."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import epnas
from epnas.cli import main
from epnas.data import DatasetError, from_tensors, load
from epnas.data.pretext import Colorization, Jigsaw, Rotation, make, permutations, pretext_data
from epnas.errors import EpnasError
from epnas.evaluators.proxy import FidelityError, Setting, accuracy_label
from epnas.evaluators.training import TrainingEvaluator
from epnas.spaces import Layer
from epnas.spaces.genome import Genome
from epnas.trial import Candidate

TINY = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "precision": "fp32"}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))


def images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def genome() -> Genome:
    return epnas.spaces.get("layerwise").genome([Layer(1, "conv", 0, -1, 3, 16, "relu")])


def test_rotation_labels_are_the_turn_given() -> None:
    x = images(32, (2, 6, 6))
    out, turns = Rotation()(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert set(turns.tolist()) == {0, 1, 2, 3}
    for i in range(len(x)):
        assert torch.equal(out[i], torch.rot90(x[i], int(turns[i]), dims=(1, 2)))


def test_rotation_refuses_images_that_are_not_square() -> None:
    with pytest.raises(DatasetError, match="square images, got 6x8"):
        make("rotation", (1, 6, 8))


def test_permutation_sets_are_valid_distinct_seeded_and_far_apart() -> None:
    every = permutations(4, 24)
    assert sorted(map(tuple, every)) == sorted(itertools.permutations(range(4)))
    chosen = permutations(9, 30, seed=3)
    assert chosen.shape == (30, 9) and len({tuple(p) for p in chosen}) == 30
    assert all(sorted(p) == list(range(9)) for p in chosen)
    assert np.array_equal(chosen, permutations(9, 30, seed=3))
    assert not np.array_equal(chosen, permutations(9, 30, seed=4))

    def closest(perms: np.ndarray) -> int:
        return min(int((a != b).sum()) for a, b in itertools.combinations(perms, 2))

    drawn = np.array([np.random.default_rng(s).permutation(9) for s in range(30)])
    assert closest(chosen) > closest(drawn)  # greedy max-min beats random draws
    with pytest.raises(ValueError, match="choose 1 to 24"):
        permutations(4, 25)


@pytest.mark.parametrize(("shape", "grid"), [((1, 8, 8), 2), ((3, 10, 11), 3)])
def test_jigsaw_shuffles_tiles_by_the_labelled_permutation(shape, grid) -> None:
    task = Jigsaw(shape, grid, 6)
    assert task.classes == tuple("012345")
    x = images(12, shape)
    out, chosen = task(x, torch.Generator().manual_seed(0))
    _, h, w = shape
    th, tw = h // grid, w // grid
    for i in range(len(x)):
        perm = task.perms[chosen[i]]
        back = out[i].clone()
        for position, tile in enumerate(perm.tolist()):  # put every tile back
            r, c = divmod(position, grid)
            sr, sc = divmod(tile, grid)
            back[:, sr * th:(sr + 1) * th, sc * tw:(sc + 1) * tw] = \
                out[i, :, r * th:(r + 1) * th, c * tw:(c + 1) * tw]
        assert torch.equal(back, x[i])  # the border past the last tile never moved
    assert not torch.equal(out, x)


def test_colorization_targets_the_dominant_hue_from_luminance() -> None:
    task = Colorization(6)
    assert len(task.classes) == 7 and task.classes[-1] == "grey"
    red, blue, grey = ((200, 30, 30), (30, 30, 200), (90, 90, 90))
    x = torch.tensor([red, blue, grey], dtype=torch.uint8)[:, :, None, None].expand(3, 3, 4, 4)
    inputs, labels = task(x.contiguous(), torch.Generator())
    assert labels[2] == 6 and labels[0] != labels[1] and max(labels[:2]) < 6
    half = x.clone()  # a red image with a little blue: still red
    half[:, :, :, :1] = torch.tensor(blue, dtype=torch.uint8)[None, :, None, None]
    assert torch.equal(task.targets(half)[:2], labels[:2].new_tensor([labels[0], labels[1]]))
    assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 1], inputs[:, 2])
    assert inputs[0, 0, 0, 0] == round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)
    with pytest.raises(DatasetError, match="needs colour") as info:
        make("colorization", (1, 8, 8))
    assert "\n" not in str(info.value)


def test_pretext_data_has_no_labels_and_fixed_task_validation() -> None:
    data = from_tensors(images(60, (1, 8, 8)), torch.arange(60) % 3)
    task = make("rotation", data.input_shape)
    one, two = pretext_data(data, task), pretext_data(data, task)
    assert one.classes == task.classes and not one.train_y.any()
    assert torch.equal(one.val_x, two.val_x) and torch.equal(one.val_y, two.val_y)


@pytest.mark.parametrize("fidelity", ["pretext=rotation", "pretext=jigsaw,perms=6",
                                      "pretext=colorization,bins=4"])
def test_no_label_is_read(fidelity: str) -> None:
    data = from_tensors(images(96, (3, 8, 8)), torch.arange(96) % 4)
    generator = torch.Generator().manual_seed(5)

    def shuffled(y: torch.Tensor) -> torch.Tensor:
        return y[torch.randperm(len(y), generator=generator)]

    other = dataclasses.replace(data, train_y=shuffled(data.train_y),
                                val_y=shuffled(data.val_y), test_y=shuffled(data.test_y))
    results = []
    for labelled in (data, other):
        evaluator = TrainingEvaluator(labelled, schedule=TINY, share=False)
        results.append(evaluator.evaluate(Candidate(genome(), fidelity, {})))
    assert results[0].status == "done", results[0].error
    same = ("accuracy", "loss", "val_loss", "params", "flops")
    assert {k: results[0].metrics[k] for k in same} == {k: results[1].metrics[k] for k in same}
    assert not torch.equal(data.train_y, other.train_y)


@pytest.mark.parametrize(("text", "says"), [
    ("pretext=sudoku", "pretext"),
    ("pretext=rotation,grid=2", "grid is an option of pretext=jigsaw"),
    ("pretext=jigsaw,bins=4", "bins is an option of pretext=colorization"),
    ("pretext=jigsaw,grid=4", "less than or equal to 3"),
])
def test_bad_pretext_specs_are_one_line(text: str, says: str) -> None:
    with pytest.raises(FidelityError, match=says) as info:
        Setting.parse(text)
    assert "\n" not in str(info.value)


def test_specs_combine_with_reduced_settings_and_name_the_accuracy() -> None:
    setting = Setting.parse("e=2,pretext=jigsaw,perms=12,grid=2,s=0.5")
    assert str(setting) == "full,s=0.5,e=2,pretext=jigsaw,grid=2,perms=12"
    assert Setting.parse(str(setting)) == setting and setting.reduced
    assert accuracy_label(str(setting)) == "accuracy (jigsaw pretext)"
    assert accuracy_label("prediction") == accuracy_label("12ep") == "accuracy"


def write_pngs(directory: Path, n: int, colour: bool = True) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (12, 12, 3) if colour else (12, 12)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(directory / f"{i}.png")


def test_a_folder_without_classes_trains_only_pretext_tasks(tmp_path: Path) -> None:
    write_pngs(tmp_path / "flat", 40)
    data = load("folder", tmp_path / "flat", image_size=8)
    assert data.classes == () and len(data.train_y) + len(data.val_y) + len(data.test_y) == 40
    evaluator = TrainingEvaluator("folder", str(tmp_path / "flat"), schedule=TINY, share=False)
    with pytest.raises(EpnasError, match=r"has none .*pretext=rotation") as info:
        evaluator.check_fidelity("prediction")
    assert "\n" not in str(info.value)
    evaluator.check_fidelity("pretext=rotation")
    with pytest.raises(EpnasError, match="perms=25 is more than the 24"):
        evaluator.check_fidelity("pretext=jigsaw,grid=2,perms=25")
    result = evaluator.evaluate(Candidate(genome(), "pretext=rotation", {}))
    assert result.status == "done" and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert evaluator.evaluate(Candidate(genome(), "full", {})).status == "failed"


def test_search_refuses_bad_or_label_needing_fidelities_before_the_run_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_pngs(tmp_path / "flat", 30, colour=False)
    cases = [(["--fidelity", "pretext=sudoku"], "pretext"),
             (["--dataset", "folder", "--data", str(tmp_path / "flat")], "has none"),
             (["--fidelity", "pretext=colorization"], "needs colour")]
    for args, says in cases:
        out = tmp_path / "run"
        assert main(["search", "--trials", "1", *args, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not out.exists()


@pytest.mark.slow
def test_label_free_search_then_retrain_with_labels(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    flat, labelled = tmp_path / "flat", tmp_path / "labelled"
    write_pngs(flat, 48)
    for name in ("a", "b"):
        write_pngs(labelled / name, 12)
    out = tmp_path / "run"
    common = ["--strategy", "random", "--space-opt", "max_layers=3", "--space-opt",
              "channels=4,8", "--out", str(out), "--quiet"]
    assert main(["search", "--dataset", "folder", "--data", str(flat), "--fidelity",
                 "pretext=rotation,e=1", "--trials", "2", *common]) == 0
    text = capsys.readouterr().out
    assert "rotation pretext" in text and "best feasible architecture" in text
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "% (rotation pretext)" in status and "accuracy (rotation" in status
    assert main(["retrain", str(out), "--epochs", "1"]) == 2
    assert "no labels" in capsys.readouterr().err
    assert main(["retrain", str(out), "--data", str(labelled), "--epochs", "1",
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["classes"] == ["a", "b"] and metrics["test_accuracy"] is not None


@pytest.mark.slow
def test_cli_rotation_search_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", "--fidelity", "pretext=rotation,e=1", "--trials", "2", "--strategy",
                 "random", "--space-opt", "max_layers=3", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.count("(rotation pretext)") >= 3  # both trials and the best
    assert main(["report", str(out)]) == 0
    assert "accuracy (rotation pretext)" in (out / "report" / "report.html").read_text()


def test_proxy_study_refuses_a_task_the_data_cannot_train(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert main(["proxy-study", "--proxy", "pretext=colorization", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs colour" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.slow
def test_proxy_study_ranks_a_pretext_task_against_supervised_training(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert main(["proxy-study", "--archs", "3", "--max-mflops", "0.5", "--min-mflops", "0.05",
                 "--space-opt", "channels=8,16", "--proxy", "pretext=rotation,e=1",
                 "--reference", "prediction,e=1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["proxy"] == "full,e=1,pretext=rotation" and len(report["pairs"]) == 3
    assert all(0 <= pair["proxy_accuracy"] <= 1 for pair in report["pairs"])
    assert "kendall_tau" in report and (out / "scatter.png").is_file()  # nan on ties
