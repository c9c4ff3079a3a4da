"""REINFORCE writes genomes token by token from what the space allows next
(:meth:`~epnas.spaces.base.Space.next_tokens`), so it searches every space that says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epnas import spaces, strategies
from epnas.cli import main
from epnas.strategies.reinforce import Reinforce
from epnas.trial import Result

TOLD = [name for name in spaces.names() if spaces.get(name).next_tokens([]) is not None]


def test_the_spaces_that_say_what_comes_next_are_the_ones_it_supports() -> None:
    assert {"nb201", "multistage"} <= set(TOLD)
    assert set(TOLD) == {name for name in spaces.names()
                         if Reinforce.supports(spaces.get(name))}


@pytest.mark.parametrize("name", TOLD)
def test_next_tokens_allow_every_genome_and_only_genomes(name: str) -> None:
    space = spaces.get(name, **({"depths": (1, 2, 3)} if name == "multistage" else {}))
    rng = np.random.default_rng(0)
    for _ in range(30):  # every sampled genome is written by allowed tokens
        tokens = space.encode(space.sample(rng))
        for i, token in enumerate(tokens):
            assert token in space.next_tokens(tokens[:i])
        assert not space.next_tokens(tokens)
    for _ in range(30):  # any walk through allowed tokens decodes, and back
        tokens: list[int] = []
        while allowed := list(space.next_tokens(tokens)):
            tokens.append(int(rng.choice(allowed)))
        assert space.encode(space.decode(tokens)) == tokens


def test_it_learns_on_multistage() -> None:
    """Rewarded for the largest of the four resolutions, it comes to ask for it."""
    space = spaces.get("multistage")
    strategy = strategies.get("reinforce", space=space, seed=0, lr=0.1)
    largest = space.options.resolutions[-1]
    asked = []
    for _ in range(60):
        candidate = strategy.ask()
        asked.append(candidate.genome.resolution == largest)
        reward = float(asked[-1])
        strategy.tell(candidate, Result("done", {"accuracy": reward}, reward=reward))
    assert sum(asked[-20:]) >= 17  # a quarter of them without learning


def test_a_space_it_cannot_write_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["search", "--space", "layerwise", "--strategy", "reinforce", "--evaluator",
                 "synthetic", "--trials", "2", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "does not support space 'layerwise'" in error and len(error.splitlines()) == 1
    assert not out.exists()
