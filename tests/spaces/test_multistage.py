"""The multistage space: validation, the network and its exits, the cost model per exit,
actions and tokens."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import epnas
from epnas.errors import ActionError, GenomeError, SpaceError
from epnas.spaces import Block, Insert, Keep, MultistageGenome, MultistageSpace, Remove, Scale
from epnas.spaces.multistage.network import ExitHead, InvertedResidual, MultistageNet


def space(**options: object) -> MultistageSpace:
    return epnas.spaces.get("multistage", **options)  # type: ignore[return-value]


def genome(s: MultistageSpace, resolution: int, *depths: int, k: int = 3, e: int = 2):
    return s.genome(resolution, [[Block(k, e)] * d for d in depths])


def measured(s: MultistageSpace, g: epnas.Genome, shape: tuple[int, int, int],
             classes: int) -> list[tuple[int, int]]:
    """Params and FlopCounterMode FLOPs of the stem, stages ``0..k`` and exits ``0..k``, for
    every exit ``k``, from one pass of the network built on the meta device."""
    with torch.device("meta"):
        model = s.build(g, shape, classes).eval()
        params = sum(p.numel() for p in model.stem.parameters())
        out = []
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            x = model.stem(model.resize(torch.empty(1, *shape)))
            for blocks, head in zip(model.stages, model.exits):
                for block in blocks:
                    x = block(x)
                head(x)
                params += sum(p.numel() for m in (blocks, head) for p in m.parameters())
                out.append((params, counter.get_total_flops()))
    return out


@pytest.mark.parametrize("options, message", [
    ({"widths": (16, 24)}, "widths needs one entry per stage"),
    ({"strides": (1, 2, 3, 2)}, "strides must be 1 or 2"),
    ({"depths": (1, 3)}, "depths must be consecutive"),
    ({"kernels": (3, 4)}, "odd"),
    ({"resolutions": (32, 24)}, "ascending"),
])
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        space(**options)


def test_validation_names_the_field() -> None:
    s = space()
    with pytest.raises(GenomeError, match=r"resolution = 21 is not one of"):
        genome(s, 21, 1, 1, 1, 1)
    with pytest.raises(GenomeError, match=r"stages\[2\]: depth 4 is not one of \[1, 2, 3\]"):
        genome(s, 24, 1, 1, 4, 1)
    with pytest.raises(GenomeError, match=r"one tuple of blocks per stage \(4\), got 3"):
        genome(s, 24, 1, 1, 1)
    with pytest.raises(GenomeError, match=r"stages\[1\]\[0\].kernel = 4 is not one of"):
        s.genome(24, [[Block(3, 2)], [Block(4, 2)], [Block(3, 2)], [Block(3, 2)]])
    with pytest.raises(GenomeError, match=r"stages\[0\]\[0\].expand = 3 is not one of"):
        genome(s, 24, 1, 1, 1, 1, e=3)
    with pytest.raises(GenomeError, match="stages: must be a tuple of tuples of blocks"):
        s.validate(MultistageGenome(space="multistage", options=s.options, resolution=24,
                                    stages=[[Block(3, 2)]] * 4))  # type: ignore[arg-type]
    data = genome(s, 24, 1, 2, 1, 1).to_dict()
    data["stages"][1][0]["stride"] = 2
    with pytest.raises(GenomeError, match=r"unknown key\(s\) \['stride'\]"):
        epnas.load_genome(data)
    with pytest.raises(GenomeError, match="space"):
        s.validate(epnas.spaces.get("nb201").sample(np.random.default_rng(0)))


def test_the_network_has_the_agreed_shape_and_exits() -> None:
    s = space()
    g = s.genome(20, [[Block(3, 2)], [Block(5, 4), Block(7, 6)], [Block(3, 2)] * 3,
                      [Block(5, 2)]])
    model = s.build(g, (1, 8, 8), 10)
    assert isinstance(model, MultistageNet) and isinstance(model.stem, nn.Sequential)
    assert [len(blocks) for blocks in model.stages] == [1, 2, 3, 1]
    assert all(isinstance(b, InvertedResidual) for blocks in model.stages for b in blocks)
    assert all(isinstance(e, ExitHead) and e.conv is None for e in model.exits)
    first, second = model.stages[1]
    assert first.depthwise[0].stride == (2, 2) and second.depthwise[0].stride == (1, 1)
    assert first.depthwise[0].kernel_size == (5, 5) and first.depthwise[0].groups == 16 * 4
    assert not first.residual and second.residual  # 16 -> 24 channels, then 24 -> 24
    assert model.stages[0][0].residual  # stem 16 channels, stage 0 width 16, stride 1
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    exits = model.forward_exits(x)
    assert [tuple(t.shape) for t in exits] == [(3, 10)] * 4
    assert torch.allclose(model(x), exits[-1])
    traced = torch.fx.symbolic_trace(model)  # the standalone export traces it
    assert set(traced.state_dict()) == set(model.state_dict())  # every exit is computed
    assert torch.allclose(traced(x), exits[-1])
    assert epnas.build(space(expands=(1, 2)).genome(20, [[Block(3, 1)]] * 4), (1, 8, 8), 10) \
        .stages[0][0].expand is None


@pytest.mark.parametrize("exit_conv", [False, True])
def test_cost_matches_the_flop_counter_at_every_exit(exit_conv: bool) -> None:
    s = space(exit_conv=exit_conv)
    rng = np.random.default_rng(5)
    for shape in ((1, 8, 8), (3, 24, 24), (3, 9, 13)):
        g = s.sample(rng)
        costs = s.exit_costs(g, shape, 10)
        assert costs[-1] == s.cost(g, shape, 10)
        assert [(c.params, c.flops) for c in costs] == measured(s, g, shape, 10)
        assert all(a.flops < b.flops and a.params < b.params and a.bytes < b.bytes
                   for a, b in itertools.pairwise(costs))


def test_small_maps_and_resizing() -> None:
    """Strides past a 1x1 map are identities; the cost follows the genome's resolution."""
    s = space(resolutions=(2, 8), strides=(2, 2, 2, 2))
    g = genome(s, 2, 1, 2, 1, 1)
    assert [(x.h, x.w) for x in s.stage_shapes(g)] == [(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)]
    cost = s.cost(g, (1, 8, 8), 10)
    assert (cost.params, cost.flops) == measured(s, g, (1, 8, 8), 10)[-1]
    out = s.build(g, (1, 8, 8), 10).forward_exits(torch.randn(2, 1, 8, 8))
    assert all(torch.isfinite(t).all() for t in out)
    big = genome(s, 8, 1, 2, 1, 1)
    assert s.cost(big, (1, 8, 8), 10).flops > s.cost(g, (1, 8, 8), 10).flops
    # the input size only moves data (the resize); FLOPs depend on the resolution alone
    assert s.cost(big, (1, 28, 28), 10).flops == s.cost(big, (1, 8, 8), 10).flops


def test_scale_channels_scales_the_widths() -> None:
    s = space()
    g = genome(s, 24, 2, 2, 2, 2, e=4)
    half = s.scale_channels(g, 0.5)
    assert half.options.widths == (8, 12, 20, 32) and half.options.stem_channels == 8
    assert half.stages == g.stages and half.resolution == g.resolution
    assert epnas.cost(half, (3, 24, 24), 10).flops < s.cost(g, (3, 24, 24), 10).flops / 3
    assert epnas.build(half, (3, 24, 24), 10)(torch.randn(1, 3, 24, 24)).shape == (1, 10)


def test_sampling_depth_and_tokens() -> None:
    s = space()
    rng = np.random.default_rng(0)
    for depth in (4, 7, 12):
        g = s.sample(rng, depth=depth)
        assert s.size(g) == depth and s.decode(s.encode(g)) == g
    with pytest.raises(GenomeError, match=r"depth = 3 blocks must be in 4..12"):
        s.sample(rng, depth=3)
    tokens = s.encode(genome(s, 24, 1, 1, 1, 1))
    assert len(tokens) == 1 + 4 * 3
    with pytest.raises(GenomeError, match="resolution token"):
        s.decode([tokens[1], *tokens[1:]])
    gap = list(tokens)
    gap[1], gap[2] = gap[2], gap[1]  # an empty slot before a block
    with pytest.raises(GenomeError, match="a block after an empty slot"):
        s.decode(gap)


def test_actions_move_stages_and_resolution() -> None:
    s = space()
    g = genome(s, 24, 1, 2, 3, 1, k=5, e=4)
    acts = s.actions(g)
    assert len(acts.scale) == 5  # a group per stage and one for the input
    assert s.apply(g, Scale(4, "width", 1)).resolution == 28
    with pytest.raises(ActionError):
        s.apply(g, Scale(4, "channels", 1))
    assert s.apply(g, Scale(1, "width", -1)).stages[1] == (Block(3, 4),) * 2
    assert s.apply(g, Insert("block", 0, width=7, channels=6)).stages[0] == \
        (Block(5, 4), Block(7, 6))
    assert s.apply(g, Remove(1)).stages[1] == (Block(5, 4),)
    with pytest.raises(ActionError, match="maximum depth 3"):
        s.apply(g, Insert("block", 2, width=3, channels=2))
    with pytest.raises(ActionError, match="minimum depth 1"):
        s.apply(g, Remove(0))
    remove = acts.next_decision({"kind": "remove"})
    assert remove is not None and remove.legal == (1, 2)
    assert s.apply(g, Keep()) is g


ACTIONS = st.one_of(
    st.builds(Scale, st.integers(-1, 6), st.sampled_from(["channels", "width", "depth"]),
              st.integers(-2, 2)),
    st.builds(Remove, st.integers(-1, 5)),
    st.builds(Insert, op=st.sampled_from(["block", "conv"]), place=st.integers(-1, 5),
              width=st.sampled_from([None, 3, 4, 7]), channels=st.sampled_from([None, 2, 3, 6])),
    st.just(Keep()),
)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(ACTIONS, max_size=12))
def test_any_action_gives_a_valid_genome_or_an_action_error(seed: int, actions: list) -> None:
    s = space()
    g = s.sample(np.random.default_rng(seed))
    for action in actions:
        try:
            g = s.apply(g, action)
        except ActionError:
            continue
        s.validate(g)
        assert epnas.load_genome(g.to_json()) == g
