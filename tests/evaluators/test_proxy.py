"""EcoNAS reduced settings: parsing, the reduced genome and data, and their training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epnas
from epnas.data import load
from epnas.errors import EpnasError
from epnas.evaluators.proxy import FidelityError, Setting, reduce_data
from epnas.evaluators.training import TrainingEvaluator
from epnas.spaces import Layer
from epnas.testing import measure
from epnas.trial import Candidate


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(("text", "canonical"), [
    ("c=0.25,r=0.5,s=0.5,e=5", "full,c=0.25,r=0.5,s=0.5,e=5"),
    ("e=5, s=0.5 ,prediction", "prediction,s=0.5,e=5"),
    ("prediction", "prediction"),
    ("full", "full"),
    ("c=1,r=1", "full"),
])
def test_specs_parse_in_any_order_to_a_canonical_spelling(text: str, canonical: str) -> None:
    setting = Setting.parse(text)
    assert str(setting) == canonical
    assert Setting.parse(str(setting)) == setting


@pytest.mark.parametrize(("text", "says"), [
    ("c=2", "less than or equal to 1"),
    ("r=0", "greater than 0"),
    ("e=0", "greater than or equal to 1"),
    ("s=half", "valid number"),
    ("x=1", "unknown key 'x'"),
    ("c=0.5,c=0.25", "given twice"),
    ("fast", "unknown fidelity item 'fast'"),
    ("", "empty fidelity"),
])
def test_bad_specs_say_what_is_wrong_and_the_format(text: str, says: str) -> None:
    with pytest.raises(FidelityError, match=says) as info:
        Setting.parse(text)
    assert "c=0.25,r=0.5,s=0.5,e=5" in str(info.value) or "twice" in says
    assert isinstance(info.value, EpnasError)


def test_schedule_takes_epochs_and_shrinks_pixel_augmentation() -> None:
    full = Setting.parse("full").schedule("fashion-mnist")
    reduced = Setting.parse("full,r=0.5,e=3").schedule("fashion-mnist", {"lr": 0.05})
    assert (reduced.epochs, reduced.train_epochs, reduced.lr) == (3, 3, 0.05)
    assert reduced.crop_padding == round(full.crop_padding * 0.5)
    assert reduced.cutout == round(full.cutout * 0.5)
    prediction = Setting.parse("prediction,e=4").schedule("fashion-mnist")
    assert prediction.stop_epoch is None and prediction.epochs == 4
    assert prediction.warmup_epochs == 4 / 20  # the preset warms up for 1 of 20 epochs
    assert Setting.parse("prediction,e=1").schedule("digits").train_epochs == 1


@pytest.mark.parametrize("name", epnas.spaces.names())
def test_channel_factor_scales_every_space_and_builds(name: str) -> None:
    space = epnas.spaces.get(name)
    genome = space.sample(np.random.default_rng(4))
    reduced = Setting.parse("c=0.25").genome(genome)
    assert epnas.spaces.space_of(reduced).name == name
    assert epnas.cost(reduced, (3, 16, 16), 10).params < epnas.cost(genome, (3, 16, 16), 10).params
    params, _ = measure(reduced, (3, 16, 16))
    assert params == epnas.cost(reduced, (3, 16, 16), 10).params
    tiny = space.scale_channels(genome, 1e-3)  # every count rounds to 0: kept at 1
    with torch.device("meta"):
        convs = [m for m in epnas.build(tiny, (3, 16, 16), 10).modules()
                 if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.out_channels >= 1 for m in convs)


def test_channel_factor_scales_layer_channels_exactly() -> None:
    space = epnas.spaces.get("layerwise")
    genome = space.genome([Layer(1, "conv", 0, -1, 3, 64, "relu"), Layer(2, "maxpool", 1, -1, 2),
                           Layer(3, "conv", 2, -1, 3, 96, "relu")])
    reduced = space.scale_channels(genome, 0.25)
    assert [layer.channels for layer in reduced.layers] == [16, None, 24]
    assert reduced.options.stem_channels == 4 and genome.options.stem_channels == 16


def test_reduced_data_is_a_stratified_seeded_resized_subsample() -> None:
    data = load("digits")
    reduced = reduce_data(data, Setting.parse("r=0.5,s=0.5"), seed=1)
    assert reduced.input_shape == (1, 4, 4) and reduced.val_x.shape[1:] == (1, 4, 4)
    assert len(reduced.val_y) == len(data.val_y)  # validation is never subsampled
    assert abs(len(reduced.train_y) - len(data.train_y) / 2) <= 1
    full_counts = torch.bincount(data.train_y, minlength=10).float()
    counts = torch.bincount(reduced.train_y, minlength=10).float()
    assert torch.all((counts - full_counts / 2).abs() <= 1)  # every class halved
    again = reduce_data(data, Setting.parse("r=0.5,s=0.5"), seed=1)
    assert torch.equal(again.train_x, reduced.train_x)
    other = reduce_data(data, Setting.parse("r=0.5,s=0.5"), seed=2)
    assert not torch.equal(other.train_y, reduced.train_y)
    with pytest.raises(FidelityError, match="classes"):
        reduce_data(data, Setting.parse("s=0.001"))


def test_evaluator_trains_the_reduced_setting_and_reports_searched_costs() -> None:
    space = epnas.spaces.get("layerwise")
    genome = space.genome([Layer(1, "conv", 0, -1, 3, 64, "relu"), Layer(2, "maxpool", 1, -1, 2),
                           Layer(3, "conv", 2, -1, 3, 64, "relu")])
    evaluator = TrainingEvaluator("digits", seed=0)
    result = evaluator.evaluate(Candidate(genome, "prediction,c=0.5,r=0.5,s=0.5,e=8"))
    assert result.status == "done", result.error
    assert result.accuracy > 0.3  # well above chance (10%) on 4x4 digits
    searched = epnas.cost(genome, (1, 8, 8), 10)
    assert (result.metrics["params"], result.metrics["flops"]) == (searched.params,
                                                                   searched.flops)
    assert 0 < result.metrics["proxy_flops"] < searched.flops / 4
    assert result.metrics["epochs"] == 8 and result.metrics["train_seconds"] > 0
    bad = evaluator.evaluate(Candidate(genome, "c=0.5,x=1"))
    assert (bad.status, bad.reason) == ("failed", "error") and "unknown key 'x'" in bad.error
