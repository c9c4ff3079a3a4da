"""The space contract (:func:`epnas.testing.check_space`), run over every registered space
and every property, so a new space is tested the day it is registered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epnas
from epnas.testing import SPACE_PROPERTIES, check_space


@pytest.mark.parametrize("prop", SPACE_PROPERTIES)
def test_space_contract(space: epnas.Space, prop: str) -> None:
    check_space(space, properties=[prop])


@pytest.mark.parametrize("name", ["layerwise", "cellwise"])  # nb201 builds cells as published
def test_every_built_unit_reaches_the_output(name: str) -> None:
    """Layers and branches that reach no output are left out of the network."""
    space = epnas.spaces.get(name)
    rng = np.random.default_rng(1234)
    for _ in range(3):
        model = epnas.build(space.sample(rng), (3, 8, 8), 7)
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        assert all(p.grad is not None for p in model.parameters()), \
            "a built unit does not reach the output"


def test_a_failed_property_is_named() -> None:
    class Broken(epnas.spaces.LayerwiseSpace):
        def encode(self, genome: epnas.Genome) -> list[int]:
            return [-1] * len(self.token_fields)

    space = Broken()
    space.name = "layerwise"  # its genomes load as layerwise ones
    with pytest.raises(AssertionError, match=r"space 'layerwise': property 'tokens' failed: "
                                             r"tokens \[-1, .*\] are not ints"):
        check_space(space, properties=["tokens"])
    with pytest.raises(AssertionError, match=r"property 'name' failed: epnas\.spaces\.get"):
        check_space(space, properties=["name"])
    with pytest.raises(ValueError, match="unknown properties"):
        check_space(space, properties=["nope"])
