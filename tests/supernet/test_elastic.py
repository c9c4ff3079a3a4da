"""Elastic modules: a sliced static sub-network computes what the supernet computes at its
setting; importance sorting keeps the largest network's function; BN recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epnas import spaces
from epnas.spaces.multistage import Block, MultistageOptions
from epnas.supernet import Supernet, recalibrate


def _randomised(options: MultistageOptions) -> Supernet:
    """A supernet whose BN statistics and kernel maps are far from their initial values,
    so slicing mistakes show."""
    torch.manual_seed(0)
    net = Supernet(options, 1, 10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.2 * torch.randn_like(p))
    return net.eval()


OPTIONS = MultistageOptions(stages=3, widths=(8, 12, 16), strides=(1, 2, 2), stem_channels=8,
                            depths=(1, 2, 3), kernels=(3, 5, 7), expands=(1, 2, 4),
                            resolutions=(12, 16), exit_conv=True)


def _genomes(net: Supernet) -> list:
    rng = np.random.default_rng(3)
    hand = net.genome(12, [1, 3, 2], [[Block(3, 1)], [Block(5, 2), Block(7, 4), Block(3, 1)],
                                      [Block(3, 4), Block(5, 1)]])
    return [net.largest(), net.smallest(), hand, *(net.sample(rng) for _ in range(4))]


def test_a_sliced_subnet_computes_the_supernet_at_its_setting() -> None:
    net = _randomised(OPTIONS)
    x = torch.randn(3, 1, 14, 14)
    space = spaces.get("multistage", **OPTIONS.model_dump())
    kernels = set()
    for genome in _genomes(net):
        space.validate(genome)
        static = net.subnet(genome)
        expected = net.forward_exits(x, genome)
        got = static.forward_exits(x)
        assert len(got) == 3
        for a, b in zip(expected, got):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static(x), expected[-1], rtol=1e-5, atol=1e-5)
        kernels |= {b.kernel for stage in genome.stages for b in stage}
    assert kernels == {3, 5, 7}


def test_smaller_kernels_are_transformed_centres() -> None:
    net = _randomised(OPTIONS)
    block = net.stages[1][1]
    w7 = block.depthwise[0].weight[:4]
    w5 = (w7[:, :, 1:6, 1:6].reshape(4, 25) @ block.transforms["5"]).reshape(4, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(4, 9) @ block.transforms["3"]).reshape(4, 1, 3, 3)
    torch.testing.assert_close(block.kernel_weight(5, 4), w5)
    torch.testing.assert_close(block.kernel_weight(3, 4), w3)


def test_sorting_keeps_the_largest_network_and_orders_channels_by_importance() -> None:
    net = _randomised(OPTIONS)
    x = torch.randn(2, 1, 16, 16)
    before = net.forward_exits(x, net.largest())
    block = net.stages[2][0]
    assert block.expand is not None
    importance = block.expand[0].weight.abs().sum((1, 2, 3))
    assert not bool((importance[:-1] >= importance[1:]).all())  # not sorted yet
    net.sort_channels()
    importance = block.expand[0].weight.abs().sum((1, 2, 3))
    assert bool((importance[:-1] >= importance[1:]).all())
    for a, b in zip(before, net.forward_exits(x, net.largest())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_recalibration_estimates_the_batch_statistics() -> None:
    net = _randomised(OPTIONS)
    static = net.subnet(net.smallest())
    batches = [torch.randn(8, 1, 12, 12) + 3 for _ in range(2)]
    recalibrate(static, batches)
    assert not static.training
    stem_bn = static.stem[1]
    pre = torch.cat([static.stem[0](b) for b in batches])
    torch.testing.assert_close(stem_bn.running_mean, pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert stem_bn.momentum == pytest.approx(0.1)
