"""The block hooks of the layerwise space (block-wise DNA search): split, assemble, costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epnas import SpaceError
from epnas.costmodel import Shape, Tally
from epnas.spaces.layerwise import Layer
from epnas.spaces.registry import get

SPACE = get("layerwise")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_blocks_assemble_round_trip_and_costs_add_up(seed: int) -> None:
    genome = SPACE.sample(np.random.default_rng(seed))
    parts = SPACE.blocks(genome)
    assert SPACE.assemble(parts) == genome  # uids too
    shape = inp = (3, 16, 16)
    total = np.zeros(4)
    for k, part in enumerate(parts):
        c = SPACE.block_cost(part, k, inp)
        total += (c.params, c.flops, c.bytes, c.activations)
        inp = SPACE.block_shape(part, k, inp)
    head = Tally()
    head.head(Shape(*inp), 10)
    h = head.result()
    full = SPACE.cost(genome, shape, 10)
    assert tuple(total) == (full.params - h.params, full.flops - h.flops,
                            full.bytes - h.bytes, full.activations - h.activations)


def _layers(*ops: str) -> list[Layer]:
    out = []
    for i, op in enumerate(ops, start=1):
        if op == "conv":
            out.append(Layer(i, "conv", i - 1, -1, 3, 16, "relu"))
        else:
            out.append(Layer(i, "maxpool", i - 1, -1, 2))
    return out


def test_cuts_follow_pools_unless_a_skip_crosses_them() -> None:
    genome = SPACE.genome(_layers("conv", "maxpool", "conv", "maxpool", "conv"))
    assert [SPACE.size(p) for p in SPACE.blocks(genome)] == [2, 2, 1]
    assert SPACE.block_outputs(genome) == ["layers.1", "layers.3", "layers.4"]
    layers = _layers("conv", "maxpool", "conv", "maxpool", "conv")
    layers[4] = Layer(5, "conv", 4, 1, 3, 16, "relu")  # a skip from layer 1 over both pools
    assert len(SPACE.blocks(SPACE.genome(layers))) == 1


def test_block_outputs_name_the_teacher_features_the_blocks_compute() -> None:
    genome = SPACE.genome(_layers("conv", "maxpool", "conv", "maxpool", "conv"))
    model = SPACE.build(genome, (1, 8, 8), 10).eval()
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    for name in SPACE.block_outputs(genome):
        modules[name].register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o))
    x = torch.randn(2, 1, 8, 8)
    model(x)
    # the same weights, block by block, give the same features
    inp, feature = (1, 8, 8), x
    for k, (part, name) in enumerate(zip(SPACE.blocks(genome), SPACE.block_outputs(genome))):
        block = SPACE.build_block(part, k, inp).eval()
        prefix = {0: ("stem.", "layers.0.", "layers.1."), 1: ("layers.2.", "layers.3."),
                  2: ("layers.4.",)}[k]
        state = {}
        for key, value in model.state_dict().items():
            for j, p in enumerate(prefix):
                if key.startswith(p):
                    local = "stem." if p == "stem." else f"layers.{j - (k == 0)}."
                    state[local + key[len(p):]] = value
        block.load_state_dict(state)
        feature = block(feature)
        assert torch.allclose(feature, seen[name], atol=1e-5)
        inp = SPACE.block_shape(part, k, inp)
        assert tuple(feature.shape[1:]) == inp


def test_sampled_blocks_reach_the_teacher_size_and_always_assemble() -> None:
    rng = np.random.default_rng(1)
    plan = [((3, 32, 32), (16, 16, 16)), ((16, 16, 16), (32, 8, 8)), ((32, 8, 8), (64, 8, 8))]
    for _ in range(5):
        parts = [SPACE.sample_block(rng, k, 3, i, o) for k, (i, o) in enumerate(plan)]
        for k, (part, (i, o)) in enumerate(zip(parts, plan)):
            assert SPACE.block_shape(part, k, i)[1:] == o[1:]
        SPACE.validate(SPACE.assemble(parts))
    with pytest.raises(SpaceError, match="exceed max_layers"):
        SPACE.sample_block(rng, 0, 17, (3, 32, 32), (16, 16, 16))


def test_a_space_without_blocks_says_which_hooks_it_lacks() -> None:
    nb201 = get("nb201")
    with pytest.raises(SpaceError, match=r"does not split into blocks.*sample_block"):
        nb201.blocks(nb201.sample(np.random.default_rng(0)))
