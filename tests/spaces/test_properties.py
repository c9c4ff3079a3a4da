"""Property tests: random action chains stay valid, buildable and correctly costed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import epnas
from epnas.errors import ActionError
from epnas.spaces import Insert, Keep, Remove, Scale
from epnas.testing import check_cost

CHAIN = 30


def random_action(space: epnas.Space, genome: epnas.Genome,
                  rng: np.random.Generator) -> epnas.spaces.Action:
    """One legal action: a scale decision of a random group, or an insert decision."""
    actions = space.actions(genome)
    if actions.scale and rng.random() < 0.5:
        group = int(rng.integers(len(actions.scale)))
        return actions.scale_actions(["keep"] * group + [actions.scale[group].sample(rng)])[-1]
    return actions.sample_insert(rng)


@pytest.mark.parametrize("name", epnas.spaces.names())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(1, 8, 8), (3, 11, 9)]))
def test_action_chains_stay_valid_and_costed(name: str, seed: int,
                                             shape: tuple[int, int, int]) -> None:
    space = epnas.spaces.get(name)
    rng = np.random.default_rng(seed)
    genome = space.sample(rng)
    for _ in range(CHAIN):
        genome = space.apply(genome, random_action(space, genome, rng))
        space.validate(genome)
    assert epnas.load_genome(genome.to_json()) == genome
    check_cost(genome, shape)


ACTIONS = st.one_of(
    st.builds(Scale, st.integers(-1, 5), st.sampled_from(["channels", "width", "depth"]),
              st.integers(-2, 2)),
    st.builds(Remove, st.integers(-2, 20)),
    st.builds(
        Insert,
        op=st.sampled_from(["conv", "sepconv", "maxpool", "add", "conv-none", "none-none",
                            "nor_conv_3x3", "none", "bogus"]),
        place=st.integers(-1, 20), src2=st.integers(-2, 20),
        width=st.sampled_from([None, 1, 2, 3, 4, 7]), pool=st.sampled_from([None, 2, 3, 5]),
        channels=st.sampled_from([None, 8, 16, 17, 32]),
        act=st.sampled_from([None, "relu", "crelu", "tanh"]),
        propagate=st.sampled_from([None, 0, 1, 2]),
    ),
    st.just(Keep()),
)


@pytest.mark.parametrize("name", epnas.spaces.names())
@settings(deadline=None)
@given(seed=st.integers(0, 2**32 - 1), action=ACTIONS)
def test_arbitrary_actions_apply_cleanly_or_raise_action_error(
        name: str, seed: int, action: epnas.spaces.Action) -> None:
    space = epnas.spaces.get(name)
    genome = space.sample(np.random.default_rng(seed))
    try:
        result = space.apply(genome, action)
    except ActionError as exc:
        assert "illegal action" in str(exc)
        return
    space.validate(result)
