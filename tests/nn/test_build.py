"""Builder behaviour: the documented ops, shape rules and join rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import epnas
from epnas.nn.ops import CReLU, SamePool, down_pool
from epnas.spaces import Branch, Layer

LW = epnas.spaces.get("layerwise")


def conv(uid: int, src1: int, src2: int = -1, channels: int = 16, act: str = "relu",
         op: str = "conv", width: int = 3) -> Layer:
    return Layer(uid, op, src1, src2, width, channels, act)


def test_crelu_doubles_channels() -> None:
    g = LW.genome([conv(1, 0, act="crelu"), conv(2, 1, channels=32)])
    model = epnas.build(g, (1, 8, 8), 10)
    assert isinstance(model.layers[0].op[-1], CReLU)
    assert model.layers[1].op[0].in_channels == 32  # 16 filters, doubled by CReLU


def test_separable_conv_is_depthwise_then_pointwise() -> None:
    g = LW.genome([conv(1, 0, op="sepconv", channels=32, width=5)])
    op = epnas.build(g, (3, 16, 16), 10).layers[0].op
    dw, pw = op[0], op[1]
    assert (dw.groups, dw.kernel_size, pw.kernel_size) == (16, (5, 5), (1, 1))
    assert pw.out_channels == 32


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("size", [1, 2, 7, 8, 13])
def test_down_pool_halves_with_ceil_and_is_identity_on_1x1(k: int, size: int) -> None:
    x = torch.randn(2, 3, size, size)
    for kind in ("maxpool", "avgpool"):
        y = down_pool(kind, k)(x)
        assert y.shape[-2:] == (-(-size // 2),) * 2
        if size == 1:
            assert torch.allclose(y, x)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_same_pool_keeps_the_size(k: int) -> None:
    x = torch.randn(1, 4, 9, 6)
    assert SamePool("maxpool", k)(x).shape == x.shape
    assert SamePool("avgpool", k)(x).shape == x.shape


def test_pool_layers_on_a_1x1_map_build_as_identity() -> None:
    pools = [Layer(i, "maxpool", i - 1, -1, 2) for i in range(1, 6)]
    model = epnas.build(LW.genome(pools), (1, 8, 8), 10)  # 8 -> 4 -> 2 -> 1 -> 1 -> 1
    assert [type(layer.op) for layer in model.layers] == [nn.MaxPool2d] * 3 + [nn.Identity] * 2


def test_join_rule_pools_and_projects_the_finer_input() -> None:
    layers = [conv(1, 0, channels=16), Layer(2, "maxpool", 1, -1, 2),
              conv(3, 2, src2=0, channels=64)]
    model = epnas.build(LW.genome(layers), (1, 8, 8), 10)
    skip = model.layers[2].skip
    assert isinstance(skip[0], nn.AvgPool2d) and skip[0].kernel_size == 2
    assert skip[1][0].in_channels == 16 and skip[1][0].out_channels == 64
    assert isinstance(model.layers[2].main, nn.Identity)


def test_join_takes_the_coarser_resolution_when_the_skip_is_coarser() -> None:
    layers = [Layer(1, "avgpool", 0, -1, 2), conv(2, 0, src2=1, channels=16)]
    model = epnas.build(LW.genome(layers), (1, 8, 8), 10)
    assert isinstance(model.layers[1].main, nn.AvgPool2d)  # the full-res main path is pooled
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_dead_layers_are_not_built() -> None:
    layers = [conv(1, 0), conv(2, 0), conv(3, 1)]  # layer 2 reaches nothing
    model = epnas.build(LW.genome(layers), (1, 8, 8), 10)
    assert [block.index for block in model.layers] == [1, 3]


def test_cellwise_cell_concatenates_propagated_branches_and_projects() -> None:
    cw = epnas.spaces.get("cellwise", stages=1, cells_per_stage=1)
    g = cw.genome([Branch(1, "conv-none", 0, 0, 8, 3, None, 1),
                   Branch(2, "maxpool-none", 1, 0, 12, None, 2, 1)])
    model = epnas.build(g, (3, 12, 12), 5)
    cell = model[1]
    assert cell.keep == [1, 2]
    assert cell.project[0].in_channels == 20 and cell.project[0].out_channels == 16
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 5)


def test_nb201_matches_the_published_parameter_count() -> None:
    # NAS-Bench-201 reports 1.5M parameters (1,532,186 with a 10-class head) for the
    # cell with nor_conv_3x3 on every edge, C=16, N=5.
    nb = epnas.spaces.get("nb201")
    g = nb.genome(["nor_conv_3x3"] * 6)
    params = sum(p.numel() for p in epnas.build(g, (3, 32, 32), 10).parameters())
    assert params == epnas.cost(g, (3, 32, 32), 10).params
    assert 1.50e6 < params < 1.56e6


def test_same_seed_same_weights_and_outputs() -> None:
    g = LW.sample(np.random.default_rng(3), depth=4)
    x = torch.randn(2, 3, 10, 10)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        outs.append(epnas.build(g, (3, 10, 10), 10).eval()(x))
    assert torch.equal(outs[0], outs[1])


def test_bad_input_shape_is_refused() -> None:
    g = LW.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="input_shape"):
        epnas.build(g, (3, 0, 8), 10)
