"""The parameter-sharing dictionary: keys, splice/pad semantics, merge rule, file format."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import epnas
from epnas.errors import EpnasError
from epnas.spaces import Insert, Layer, Scale
from epnas.train.sharing import WeightDictionary, batchnorm_names, fit, unit_states

LW = epnas.spaces.get("layerwise", groups=3)
SHAPE = (3, 8, 8)


def conv(uid: int, src1: int, src2: int = -1, channels: int = 16, width: int = 3) -> Layer:
    return Layer(uid, "conv", src1, src2, width, channels, "relu")


def parent() -> epnas.spaces.LayerwiseGenome:
    return LW.genome([conv(1, 0), conv(2, 1, 0, channels=32), conv(3, 2)])


def built(genome: epnas.Genome, seed: int) -> torch.nn.Module:
    """A built model whose every tensor, BN statistics included, is random."""
    torch.manual_seed(seed)
    model = epnas.build(genome, SHAPE, 10)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not name.endswith("num_batches_tracked"):
                t.copy_(torch.rand_like(t) + 0.5)
    return model


def test_fit_slices_a_bigger_tensor_to_its_leading_block() -> None:
    stored = torch.arange(20.0).reshape(4, 5)
    assert torch.equal(fit(stored, (2, 3)), stored[:2, :3])


def test_fit_zero_pads_a_smaller_tensor() -> None:
    stored = torch.arange(1.0, 5.0).reshape(2, 2)
    out = fit(stored, (3, 4))
    assert torch.equal(out[:2, :2], stored)
    assert out.sum() == stored.sum() and out.shape == (3, 4)


def test_fit_mixes_slicing_and_padding_per_dimension() -> None:
    stored = torch.ones(4, 1, 3, 3)
    out = fit(stored, (2, 3, 5, 5), fill=7.0)
    assert torch.equal(out[:, :1, :3, :3], torch.ones(2, 1, 3, 3))
    assert (out[:, 1:] == 7).all() and (out[:, :, 3:] == 7).all()


def single(channels: int) -> epnas.spaces.LayerwiseGenome:
    return LW.genome([conv(1, 0, channels=channels)])


def test_the_closest_stored_shape_is_chosen_and_an_equal_shape_copied() -> None:
    weights = WeightDictionary()
    stored = {c: unit_states(single(c), built(single(c), c)) for c in (96, 32, 16)}
    for c in (96, 32, 16):  # merged one by one: 16 ends up newest
        weights.merge([(0.5, stored[c])])
    key = "layer/1/conv"
    assert [s["op.0.weight"].shape[0] for s in weights.entries[key]] == [16, 32, 96]

    model = epnas.build(single(64), SHAPE, 10)
    stats = weights.load_into(single(64), model)
    # 64 is 32 from 32, 32 from 96: the tie goes to the newer entry (32)
    weight = model.layers[0].op[0].weight
    assert torch.equal(weight, fit(stored[32][key]["op.0.weight"], weight.shape))
    assert stats.resized > 0

    model = epnas.build(single(96), SHAPE, 10)
    weights.load_into(single(96), model)
    assert torch.equal(model.layers[0].op[0].weight, stored[96][key]["op.0.weight"])


def test_a_child_loads_the_parents_weights_by_uid() -> None:
    g = parent()
    trained = built(g, 0)
    weights = WeightDictionary()
    weights.merge([(0.8, unit_states(g, trained))])

    child = LW.apply(g, Insert("conv", place=1, width=5, channels=16, act="relu"))
    child = LW.apply(child, Scale(2, "channels", +1))
    assert [(u.uid, u.channels) for u in child.layers] == [(1, 16), (4, 16), (2, 32), (3, 32)]
    model = built(child, 1)
    stats = weights.load_into(child, model)

    old, new = dict(trained.named_modules()), dict(model.named_modules())
    # unchanged unit, same input: an exact copy of the convolution
    assert torch.equal(new["layers.0"].op[0].weight, old["layers.0"].op[0].weight)
    # uid 2 now reads the new 16-channel layer instead of the stem (also 16): still exact
    assert torch.equal(new["layers.2"].op[0].weight, old["layers.1"].op[0].weight)
    # uid 3 was scaled from 16 to 32 filters: leading block copied, zeros after it
    conv3 = new["layers.3"].op[0]
    assert torch.equal(conv3.weight[:16], old["layers.2"].op[0].weight)
    assert (conv3.weight[16:] == 0).all()
    # BatchNorm is never shared: every one keeps the fresh model's initialisation
    fresh = built(child, 1).state_dict()
    norms = batchnorm_names(model)
    assert norms and all(torch.equal(model.state_dict()[n], fresh[n]) for n in norms)
    assert not torch.equal(fresh["layers.0.op.0.weight"], old["layers.0"].op[0].weight)
    # the inserted layer (uid 4) has nothing stored: its convolution weight
    assert stats.missing == 1
    shared = [n for n in model.state_dict() if n not in norms]
    assert stats.exact + stats.resized + stats.missing == len(shared)
    # uid 3's convolution (32 filters now) and the head's weight (32 inputs now)
    assert stats.resized == 2


def test_batchnorm_is_not_shared_so_a_drifted_stem_does_not_reach_new_networks() -> None:
    """Carried from step to step, the stem's BN shift drifted to 17 in the default digits
    search and every later network stayed at chance accuracy."""
    g = parent()
    trained = built(g, 0)
    with torch.no_grad():
        trained.stem[1].bias.fill_(17.0)
        trained.stem[1].running_var.fill_(400.0)
    weights = WeightDictionary()
    weights.merge([(0.9, unit_states(g, trained))])
    assert all("1." not in name for name in weights.entries["stem"][0])
    model = built(g, 1)
    before = {k: v.clone() for k, v in model.stem[1].state_dict().items()}
    weights.load_into(g, model)
    assert torch.equal(model.stem[0].weight, trained.stem[0].weight)
    assert all(torch.equal(model.stem[1].state_dict()[k], v) for k, v in before.items())
    assert model.stem[1].bias.abs().max() < 17


def test_on_a_clash_the_most_accurate_model_wins_and_replaces_its_shape() -> None:
    g = parent()
    a, b, c = (unit_states(g, built(g, seed)) for seed in (1, 2, 3))
    weights = WeightDictionary()
    weights.merge([(0.3, a), (0.9, b), (0.5, c)])
    for key, state in b.items():
        assert len(weights.entries[key]) == 1
        assert all(torch.equal(weights.entries[key][0][n], t) for n, t in state.items())
    weights.merge([(0.1, a)])  # a later, less accurate model: what b learned stays
    assert torch.equal(weights.entries["stem"][0]["0.weight"], b["stem"]["0.weight"])
    weights.merge([(0.9, c)])  # as accurate: same shapes, so it replaces, not appends
    assert torch.equal(weights.entries["stem"][0]["0.weight"], c["stem"]["0.weight"])
    assert len(weights.entries["stem"]) == 1


def test_a_stored_state_without_its_accuracy_gives_way_to_any_model() -> None:
    g = parent()
    a, b = (unit_states(g, built(g, seed)) for seed in (1, 2))
    weights = WeightDictionary({key: [dict(state)] for key, state in a.items()})  # older file
    weights.merge([(0.05, b)])
    assert torch.equal(weights.entries["stem"][0]["0.weight"], b["stem"]["0.weight"])


def test_a_diverged_model_is_not_merged() -> None:
    g = parent()
    weights = WeightDictionary()
    weights.merge([(float("nan"), unit_states(g, built(g, 0)))])
    assert weights.entries == {}


def test_at_most_max_shapes_are_kept_newest_first() -> None:
    weights = WeightDictionary(max_shapes=2)
    for c in (16, 32, 64):
        weights.merge([(0.5, unit_states(single(c), built(single(c), c)))])
    assert [s["op.0.weight"].shape[0] for s in weights.entries["layer/1/conv"]] == [64, 32]


def test_save_and_load_round_trip_as_plain_tensors(tmp_path) -> None:
    g = parent()
    weights = WeightDictionary()
    weights.merge([(0.5, unit_states(g, built(g, 0)))])
    path = tmp_path / "weights" / "dictionary.pt"
    weights.save(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == set(weights.entries) and isinstance(raw["stem"][0]["0.weight"], torch.Tensor)
    loaded = WeightDictionary.load(path)
    for key, entries in weights.entries.items():
        for name, t in entries[0].items():
            assert torch.equal(loaded.entries[key][0][name], t)
    assert [p.name for p in path.parent.iterdir()] == ["dictionary.pt"]  # no temp file left


def test_loading_something_else_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"stem": torch.zeros(1)}, path)
    with pytest.raises(EpnasError, match="not a weight dictionary"):
        WeightDictionary.load(path)


KEYS = {
    "layerwise": r"stem|head|layer/\d+/\w+",
    "cellwise": r"stem|head|reduction\d+|cell\d+/project|cell\d+/branch/\d+/[\w-]+",
    "nb201": r"stem|head|reduction\d+|cell\d+/edge[0-5]/\w+",
}


@pytest.mark.parametrize("space_name", sorted(KEYS))
def test_every_tensor_of_a_model_has_exactly_one_key(space_name: str) -> None:
    space = epnas.spaces.get(space_name)
    for seed in range(3):
        g = space.sample(np.random.default_rng(seed))
        source = built(g, seed)
        states = unit_states(g, source)
        assert all(re.fullmatch(KEYS[space_name], key) for key in states), list(states)
        norms = batchnorm_names(source)
        shared = [n for n in source.state_dict() if n not in norms]  # all but BatchNorm
        assert sum(len(s) for s in states.values()) == len(shared)
        weights = WeightDictionary()
        weights.merge([(0.5, states)])
        target = epnas.build(g, SHAPE, 10)
        initial = {n: target.state_dict()[n].clone() for n in norms}
        stats = weights.load_into(g, target)
        assert (stats.resized, stats.missing) == (0, 0)
        for name in shared:
            assert torch.equal(target.state_dict()[name], source.state_dict()[name]), name
        for name in norms:
            assert torch.equal(target.state_dict()[name], initial[name]), name


class Unshared(epnas.spaces.LayerwiseSpace):
    """A user space without sharing keys (the Space default)."""

    def sharing_keys(self, genome: epnas.Genome, model: torch.nn.Module) -> None:
        return None


def test_a_space_without_sharing_keys_trains_unshared_and_says_so_once(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    saved = epnas.spaces.registry.SPACES.snapshot()
    epnas.spaces.register("unshared")(Unshared)
    try:
        study = epnas.Study(space="unshared", space_options={"max_layers": 3,
                                                             "channels": (8, 16)},
                            strategy="random", evaluator="training", dataset="digits",
                            evaluator_options={"schedule": {"epochs": 1}}, trials=3,
                            out=tmp_path / "run")
        with caplog.at_level("WARNING", logger="epnas.train.sharing"):
            summary = study.run()
            genome = summary.best.genome
            assert unit_states(genome, epnas.build(genome, SHAPE, 10)) == {}
        study.close()
    finally:
        epnas.spaces.registry.SPACES.restore(saved)
    assert summary.counts == {"done": 3}
    warnings = [r.getMessage() for r in caplog.records if "no sharing keys" in r.getMessage()]
    assert warnings == ["space 'unshared' has no sharing keys (Space.sharing_keys): its "
                        "networks train without the parameter-sharing dictionary"]
    stats = WeightDictionary().load_into(genome, epnas.build(genome, SHAPE, 10))
    assert (stats.exact, stats.resized, stats.missing) == (0, 0, 0)
