"""The block hooks of the multistage space (block-wise DNA search): one block per stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import epnas
from epnas import SpaceError
from epnas.costmodel import Shape, Tally
from epnas.errors import GenomeError
from epnas.spaces import Block, MultistageSpace

SPACES = [epnas.spaces.get("multistage"),
          epnas.spaces.get("multistage", stages=3, widths=(8, 12, 16), strides=(2, 1, 2),
                           depths=(1, 2), resolutions=(8, 12), exit_conv=True)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0, 1]), st.sampled_from([(3, 32, 32),
                                                                              (1, 8, 8)]))
def test_blocks_assemble_round_trip_and_costs_add_up(seed: int, which: int,
                                                     shape: tuple[int, int, int]) -> None:
    space: MultistageSpace = SPACES[which]  # type: ignore[assignment]
    genome = space.sample(np.random.default_rng(seed))
    parts = space.blocks(genome)
    assert len(parts) == space.options.stages
    assert space.assemble(parts) == genome
    inp, total, exits = shape, np.zeros(4), Tally()
    for k, part in enumerate(parts):
        c = space.block_cost(part, k, inp)
        total += (c.params, c.flops, c.bytes, c.activations)
        inp = space.block_shape(part, k, inp)
        space.tally_exit(exits, Shape(*inp), 10)
    e, full = exits.result(), space.cost(genome, shape, 10)
    # the promise of block_cost: a genome costs its blocks plus an exit per stage
    assert tuple(total) == (full.params - e.params, full.flops - e.flops,
                            full.bytes - e.bytes, full.activations - e.activations)


def test_block_outputs_name_the_teacher_features_the_blocks_compute() -> None:
    space = SPACES[1]
    genome = space.genome(12, [[Block(3, 2)], [Block(5, 4), Block(3, 2)], [Block(3, 4)]])
    assert space.block_outputs(genome) == ["stages.0.0", "stages.1.1", "stages.2.0"]
    torch.manual_seed(0)
    model = space.build(genome, (1, 8, 8), 10).eval()
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    for name in space.block_outputs(genome):
        modules[name].register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o))
    x = torch.randn(2, 1, 8, 8)
    model(x)
    # the same weights, block by block, give the same features
    inp, feature = (1, 8, 8), x
    state = model.state_dict()
    for k, (part, name) in enumerate(zip(space.blocks(genome), space.block_outputs(genome))):
        block = space.build_block(part, k, inp).eval()
        local = {key.replace(f"stages.{k}.", "blocks.", 1): value for key, value in state.items()
                 if key.startswith(f"stages.{k}.") or (k == 0 and key.startswith("stem."))}
        block.load_state_dict(local)
        feature = block(feature)
        assert torch.allclose(feature, seen[name], atol=1e-5)
        inp = space.block_shape(part, k, inp)
        assert tuple(feature.shape[1:]) == inp


def test_sampled_blocks_reach_the_teacher_size_and_always_assemble() -> None:
    space = SPACES[1]
    plan = [((1, 8, 8), (8, 6, 6)), ((8, 6, 6), (12, 6, 6)), ((12, 6, 6), (16, 3, 3))]
    rng = np.random.default_rng(1)
    for _ in range(5):
        parts = [space.sample_block(rng, k, 3, i, o) for k, (i, o) in enumerate(plan)]
        for k, (part, (i, o)) in enumerate(zip(parts, plan)):
            assert space.block_shape(part, k, i)[1:] == o[1:]
        assembled = space.assemble(parts)
        assert assembled.resolution == 12  # the only one whose first stage outputs 6x6
    with pytest.raises(SpaceError, match="3 stages, one block each; the teacher has 2"):
        space.sample_block(rng, 0, 2, (1, 8, 8), (8, 6, 6))
    with pytest.raises(SpaceError, match="no multistage stage 0 maps 8x8 to 5x5"):
        space.sample_block(rng, 0, 3, (1, 8, 8), (8, 5, 5))
    with pytest.raises(SpaceError, match="no multistage stage 2 maps 6x6 to 6x6"):
        space.sample_block(rng, 2, 3, (12, 6, 6), (16, 6, 6))
    with pytest.raises(GenomeError, match="assembles from 3 parts"):
        space.assemble(parts[:2])
    with pytest.raises(SpaceError, match=r"blocks 0\.\.2"):
        space.block_shape(parts[0], 3, (1, 8, 8))
