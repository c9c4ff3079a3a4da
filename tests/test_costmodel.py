"""The analytic cost model on worked numbers and against torch's own counts."""

from __future__ import annotations

import numpy as np
import pytest

import epnas
from epnas.spaces import Layer
from epnas.testing import check_cost


def test_worked_example_single_conv_layer() -> None:
    """stem 3x3 1->16, one 3x3 conv 16->8 with ReLU, head to 10 classes, on 1x8x8."""
    space = epnas.spaces.get("layerwise", channels=(8, 16))
    g = space.genome([Layer(1, "conv", 0, -1, 3, 8, "relu")])
    c = epnas.cost(g, (1, 8, 8), 10)
    stem, layer, head = 16 * 9 + 32, 16 * 8 * 9 + 16, 8 * 10 + 10
    assert c.params == stem + layer + head == 1434
    assert c.flops == 2 * (16 * 9 * 64) + 2 * (16 * 8 * 9 * 64) + 2 * 80 == 166_048
    # activations: stem reads 64, writes 1024; layer reads 1024, writes 512;
    # pooling reads 512, writes 8; the classifier reads 8, writes 10
    elements = (64 + 1024) + (1024 + 512) + (512 + 8) + (8 + 10)
    assert c.bytes == 4 * (c.params + elements) == 18_384
    assert c.intensity == pytest.approx(166_048 / 18_384)
    assert c.as_dict()["intensity"] == c.intensity
    written = 1024 + 512 + 8 + 10
    assert c.activations == written
    assert c.memory(64) == 4 * (3 * 1434 + 64 * written) == c.as_dict(64)["memory"]


def test_skip_join_costs_pooling_projection_and_sum() -> None:
    space = epnas.spaces.get("layerwise")
    plain = space.genome([Layer(1, "maxpool", 0, -1, 2), Layer(2, "conv", 1, -1, 1, 32, "relu")])
    skip = space.genome([Layer(1, "maxpool", 0, -1, 2), Layer(2, "conv", 1, 0, 1, 32, "relu")])
    a, b = epnas.cost(plain, (1, 8, 8), 10), epnas.cost(skip, (1, 8, 8), 10)
    # the stem output (16x8x8) is pooled to 16x4x4 and projected 16 -> 32 with BN
    assert b.params - a.params == 16 * 32 + 64
    assert b.flops - a.flops == 2 * 16 * 32 * 16
    moved = (1024 + 256) + (256 + 512) + 3 * 512  # pool, projection, sum of two
    assert b.bytes - a.bytes == 4 * (16 * 32 + 64 + moved)


@pytest.mark.parametrize("name", epnas.spaces.names())
def test_costs_match_built_models_on_many_genomes(name: str) -> None:
    space = epnas.spaces.get(name)
    rng = np.random.default_rng(42)
    for _ in range(25):
        genome = space.sample(rng)
        for _ in range(5):
            genome = space.apply(genome, space.actions(genome).sample_insert(rng))
        check_cost(genome, (3, 32, 32), 10)
        check_cost(genome, (1, 28, 28), 100)


def test_cost_grows_with_channels() -> None:
    space = epnas.spaces.get("layerwise", groups=1)
    g = space.genome([Layer(1, "conv", 0, -1, 3, 32, "relu")])
    bigger = space.apply(g, epnas.spaces.Scale(0, "channels", +1))
    small, large = epnas.cost(g), epnas.cost(bigger)
    assert large.params > small.params and large.flops > small.flops
    assert large.bytes > small.bytes
