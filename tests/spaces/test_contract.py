"""The space contract, run over every registered space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import epnas
from epnas.spaces import Decision, Genome
from tests.conftest import assert_cost_matches

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 9, 13)]


def test_sample_validate_roundtrip_build_forward_cost(space: epnas.Space,
                                                       rng: np.random.Generator) -> None:
    for _ in range(6):
        genome = space.sample(rng)
        space.validate(genome)
        loaded = epnas.load_genome(genome.to_json())
        assert loaded == genome and loaded.key == genome.key
        assert loaded.to_json() == genome.to_json()
        for shape in SHAPES:
            assert_cost_matches(genome, shape)


def test_forward_backward_on_a_batch_channels_last(space: epnas.Space,
                                                   rng: np.random.Generator) -> None:
    genome = space.sample(rng)
    model = epnas.build(genome, (3, 16, 16), 7).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    if space.name != "nb201":  # NAS-Bench-201 builds edges that cannot reach the output
        assert all(g is not None for g in grads), "a built unit does not reach the output"


def test_json_names_space_options_and_format(space: epnas.Space,
                                            rng: np.random.Generator) -> None:
    data = json.loads(space.sample(rng).to_json())
    assert data["space"] == space.name and data["format"] == 1
    assert data["options"] == space.options.model_dump(mode="json")


def test_same_seed_same_genomes(space: epnas.Space) -> None:
    a = [space.sample(np.random.default_rng(7)).key for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)).key for _ in range(3)]
    assert a == b


def test_key_ignores_uids_only(space: epnas.Space, rng: np.random.Generator) -> None:
    genome = space.sample(rng)
    decoded = space.decode(space.encode(genome))
    assert decoded.key == genome.key
    assert space.mutate(genome, rng).key != genome.key


def test_encode_tokens_are_in_vocabulary(space: epnas.Space, rng: np.random.Generator) -> None:
    for _ in range(20):
        genome = space.sample(rng)
        tokens = space.encode(genome)
        assert len(tokens) % len(space.token_fields) == 0
        assert all(0 <= t < space.vocab_size for t in tokens)
        assert space.decode(tokens).key == genome.key


def test_mutate_gives_valid_distinct_genomes(space: epnas.Space,
                                             rng: np.random.Generator) -> None:
    genome = space.sample(rng)
    for _ in range(50):
        child = space.mutate(genome, rng)
        space.validate(child)
        assert child.key != genome.key
        genome = child


def test_action_space_is_well_formed(space: epnas.Space, rng: np.random.Generator) -> None:
    genome = space.sample(rng)
    actions = space.actions(genome)
    for decision in actions.scale:
        assert decision.choices == epnas.spaces.SCALE_CHOICES and decision.mask[0]
    chosen: dict = {}
    while (decision := actions.next_decision(chosen)) is not None:
        assert isinstance(decision, Decision) and any(decision.mask)
        assert np.isclose(decision.probs().sum(), 1.0)
        assert all(p == 0 for p, ok in zip(decision.probs(), decision.mask) if not ok)
        chosen[decision.name] = decision.sample(rng)
    result = space.apply(genome, actions.action(chosen))
    assert isinstance(result, Genome)


def test_every_legal_first_decision_leads_to_a_valid_genome(space: epnas.Space,
                                                            rng: np.random.Generator) -> None:
    """Each legal insert/remove/keep kind, completed at random, applies cleanly."""
    genome = space.sample(rng)
    actions = space.actions(genome)
    kind = actions.next_decision({})
    for choice in kind.legal:
        for _ in range(10):
            chosen = {"kind": choice}
            while (decision := actions.next_decision(chosen)) is not None:
                chosen[decision.name] = decision.sample(rng)
            space.validate(space.apply(genome, actions.action(chosen)))


def test_sample_depth(space: epnas.Space, rng: np.random.Generator) -> None:
    genome = space.sample(rng, depth=3)
    assert space.size(genome) == 3


@pytest.mark.parametrize("name", epnas.spaces.names())
def test_genome_from_other_space_is_refused(name: str, rng: np.random.Generator) -> None:
    others = [n for n in epnas.spaces.names() if n != name]
    genome = epnas.spaces.get(others[0]).sample(rng)
    with pytest.raises(epnas.GenomeError, match="space"):
        epnas.spaces.get(name).validate(genome)


def test_decisions_use_the_fixed_vocabulary(space: epnas.Space,
                                            rng: np.random.Generator) -> None:
    vocab = space.decision_vocabulary()
    for _ in range(30):
        genome = space.sample(rng)
        actions = space.actions(genome)
        chosen: dict = {}
        while (decision := actions.next_decision(chosen)) is not None:
            assert decision.choices == vocab[decision.name]
            chosen[decision.name] = decision.sample(rng)
