"""The training evaluator's side of weight sharing: warm start from a snapshot, model.pt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import epnas
import epnas.evaluators.training as training
from epnas.evaluators.training import TrainingEvaluator
from epnas.spaces import Layer, Scale
from epnas.train.sharing import WeightDictionary, batchnorm_names, fit, unit_states
from epnas.trial import Candidate, TrialContext

LW = epnas.spaces.get("layerwise")
SHAPE, CLASSES = (1, 8, 8), 10  # digits
SCHEDULE = {"epochs": 1, "warmup_epochs": 0}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EPNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def initial(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The state_dict every model has when training starts, one per evaluation."""
    seen: list[dict[str, torch.Tensor]] = []
    real = training.train

    def spy(model: torch.nn.Module, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    return seen


def net(channels: int = 16) -> epnas.Genome:
    return LW.genome([Layer(1, "conv", 0, -1, 3, channels, "relu"),
                      Layer(2, "maxpool", 1, -1, 2),
                      Layer(3, "conv", 2, -1, 3, 16, "relu")])


@pytest.fixture(scope="module")
def run(tmp_path_factory, _cache) -> Path:
    """A run directory whose trial 1 trained :func:`net` (no snapshot yet)."""
    root = tmp_path_factory.mktemp("run")
    evaluator = TrainingEvaluator("digits", schedule=SCHEDULE)
    result = evaluator.evaluate_trial(Candidate(net(), "prediction"),
                                      TrialContext(str(root / "trials" / "1")))
    assert result.status == "done" and "warm_start" not in result.metrics
    return root


def saved(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "trials" / "1" / "model.pt", weights_only=True)


def dictionary_of(tmp_path: Path, genome: epnas.Genome, state: dict[str, torch.Tensor]) -> Path:
    model = epnas.build(genome, SHAPE, CLASSES)
    model.load_state_dict(state)
    weights = WeightDictionary()
    weights.merge([(0.9, unit_states(genome, model))])
    path = tmp_path / "weights" / "step-000000.pt"
    weights.save(path)
    return path


def test_model_pt_is_the_state_dict_of_the_built_genome(run) -> None:
    state = saved(run)
    model = epnas.build(net(), SHAPE, CLASSES)
    model.load_state_dict(state)  # strict: every key, every shape
    untrained = training.build_seeded(net(), TrainingEvaluator("digits").loaded, 0)
    assert not torch.equal(state["stem.0.weight"], untrained.state_dict()["stem.0.weight"])
    assert [p.name for p in (run / "trials" / "1").iterdir()] == ["model.pt"]


def test_an_identical_candidate_starts_from_the_stored_weights_exactly(tmp_path, run,
                                                                       initial) -> None:
    state = saved(run)
    snapshot = dictionary_of(tmp_path, net(), state)
    result = TrainingEvaluator("digits", schedule=SCHEDULE).evaluate_trial(
        Candidate(net(), "prediction"), TrialContext(str(tmp_path / "trials" / "2"),
                                                     str(snapshot)))
    assert result.status == "done" and result.metrics["warm_start"] == 1.0
    start = initial[-1]
    assert start.keys() == state.keys()
    norms = batchnorm_names(epnas.build(net(), SHAPE, CLASSES))
    assert norms
    for name, tensor in state.items():  # BatchNorm is not shared: it starts fresh
        if name not in norms:
            assert torch.equal(start[name], tensor), name
        elif "num_batches" not in name:
            assert torch.equal(start[name], torch.ones_like(tensor) if name.endswith(
                ("weight", "running_var")) else torch.zeros_like(tensor)), name


def test_a_scaled_candidate_gets_sliced_and_padded_tensors(tmp_path, run, initial) -> None:
    state = saved(run)
    snapshot = dictionary_of(tmp_path, net(16), state)
    scaled = LW.apply(net(16), Scale(0, "channels", +1))  # group 0: layer 1
    assert [layer.channels for layer in scaled.layers] == [32, None, 16]
    result = TrainingEvaluator("digits", schedule=SCHEDULE).evaluate_trial(
        Candidate(scaled, "prediction"), TrialContext(None, str(snapshot)))
    assert result.status == "done" and result.metrics["warm_start"] == 1.0
    start = initial[-1]
    # layer 1 scaled from 16 to 32 filters: the stored 16 first, zeros after them
    wide = start["layers.0.op.0.weight"]
    assert torch.equal(wide, fit(state["layers.0.op.0.weight"], wide.shape))
    assert (wide[16:] == 0).all() and torch.equal(wide[:16], state["layers.0.op.0.weight"])
    assert (start["layers.0.op.1.running_var"] == 1).all()  # BatchNorm starts fresh
    # layer 3 now reads 32 channels instead of 16: its input dimension is padded
    conv3 = start["layers.2.op.0.weight"]
    assert conv3.shape[1] == 32 and torch.equal(conv3[:, :16], state["layers.2.op.0.weight"])
    assert (conv3[:, 16:] == 0).all()
    assert torch.equal(start["stem.0.weight"], state["stem.0.weight"])


def test_share_false_starts_from_the_seeded_initialisation(tmp_path, run, initial) -> None:
    state = saved(run)
    snapshot = dictionary_of(tmp_path, net(), state)
    evaluator = TrainingEvaluator("digits", schedule=SCHEDULE, share=False)
    directory = tmp_path / "trials" / "2"
    shared_off = evaluator.evaluate_trial(Candidate(net(), "prediction"),
                                          TrialContext(str(directory), str(snapshot)))
    plain = TrainingEvaluator("digits", schedule=SCHEDULE).evaluate(Candidate(net()))
    assert initial[0].keys() == initial[1].keys()
    assert all(torch.equal(initial[0][k], initial[1][k]) for k in initial[0])
    assert not torch.equal(initial[0]["stem.0.weight"], state["stem.0.weight"])
    assert shared_off.metrics["accuracy"] == plain.metrics["accuracy"]
    assert "warm_start" not in shared_off.metrics
    assert (directory / "model.pt").is_file()  # weights are saved, shared or not
    assert evaluator.shared_units(Candidate(net(), "prediction"), directory) is None


def test_shared_units_read_back_what_the_trial_saved(tmp_path, run) -> None:
    state = saved(run)
    evaluator = TrainingEvaluator("digits")
    units = evaluator.shared_units(Candidate(net(), "prediction"), run / "trials" / "1")
    assert units is not None
    assert torch.equal(units["layer/1/conv"]["op.0.weight"], state["layers.0.op.0.weight"])
    # every tensor but BatchNorm's (weight, bias, running mean and var, batch count)
    norms = batchnorm_names(epnas.build(net(), SHAPE, CLASSES))
    assert norms and sum(len(u) for u in units.values()) == len(state) - len(norms)
    assert evaluator.shared_units(Candidate(net(), "prediction"), tmp_path / "none") is None


def test_weights_that_start_a_network_worse_than_fresh_are_not_inherited(
        run, tmp_path: Path, initial) -> None:
    """Blown-up weights (a failed training's) in the dictionary: the trial trains from its
    fresh initialisation and says so; sound weights are still inherited."""
    blown = {k: v * 1e3 if k.endswith("weight") else v for k, v in saved(run).items()}
    evaluator = TrainingEvaluator("digits", schedule=SCHEDULE)
    fresh = training.build_seeded(net(), evaluator.loaded, 0).state_dict()
    context = TrialContext(str(tmp_path / "trials" / "2"),
                           str(dictionary_of(tmp_path / "blown", net(), blown)))
    result = evaluator.evaluate_trial(Candidate(net(), "prediction"), context)
    assert result.metrics["warm_rejected"] == 1.0 and result.metrics["warm_start"] == 0.0
    assert all(torch.equal(initial[-1][k], v) for k, v in fresh.items())
    scratch = evaluator.evaluate_trial(Candidate(net(), "prediction"),
                                       TrialContext(str(tmp_path / "trials" / "4")))
    assert result.accuracy == scratch.accuracy  # trained as from scratch

    context = TrialContext(str(tmp_path / "trials" / "3"),
                           str(dictionary_of(tmp_path / "sound", net(), saved(run))))
    result = evaluator.evaluate_trial(Candidate(net(), "prediction"), context)
    assert "warm_rejected" not in result.metrics and result.metrics["warm_start"] > 0.5
    assert torch.equal(initial[-1]["stem.0.weight"], saved(run)["stem.0.weight"])
