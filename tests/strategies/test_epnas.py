"""EPNAS specifics: masks and priors respected, REINFORCE learns, the episode schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epnas
from epnas.objective import Objective
from epnas.strategies.epnas import EPNAS, Policy, _masked_log_probs, _Row, run_policy
from epnas.trial import Result


def tell_all(strategy: EPNAS, reward_of) -> list[epnas.strategies.base.Candidate]:
    batch = strategy.ask_batch(100)
    accuracies = [reward_of(c) for c in batch]  # before the step ends and clears its records
    for c, acc in zip(batch, accuracies):
        strategy.tell(c, Objective().score(Result("done", {"accuracy": acc})))
    return batch


def test_masked_choices_get_zero_probability_and_prior_multiplies_in() -> None:
    logits = torch.zeros(1, 4)
    masks = torch.tensor([[True, False, True, True]])
    priors = torch.tensor([[1.0, 5.0, 1.0, 2.0]])
    probs = _masked_log_probs(logits, masks, priors).exp()[0]
    assert torch.allclose(probs, torch.tensor([0.25, 0.0, 0.25, 0.5]))


@pytest.mark.parametrize("space", epnas.spaces.names())
def test_sampling_respects_every_mask(space: str) -> None:
    strategy = epnas.strategies.get("epnas", space, seed=3, branches=16, steps=1)
    for candidate in strategy.ask_batch(16):
        entry = strategy.pending[candidate.info["branch"]]
        for name, mask, _, index in entry["record"]["insert"]:
            assert mask[index], name
        for mask, index in entry["record"]["scale"]:
            assert mask[index]
        strategy.space.validate(candidate.genome)


def test_replayed_log_probs_equal_the_sampled_ones() -> None:
    space = epnas.spaces.get("layerwise")
    strategy = EPNAS(space, seed=0)
    parents = [space.sample(np.random.default_rng(i)) for i in range(4)]
    rows = [_Row(space.encode(p), actions=space.actions(p), pick=strategy._pick)
            for p in parents]
    with torch.no_grad():
        sampled, _ = run_policy(strategy.policy, rows, strategy.groups)
        replayed, _ = run_policy(strategy.policy,
                                 [_Row(r.tokens, record=r.record) for r in rows], strategy.groups)
    assert torch.allclose(sampled, replayed)


def pool_share(lr: float, updates: int = 40) -> tuple[float, float]:
    """REINFORCE on fixed parents, rewarding an inserted avg_pool_3x3 edge: the share of
    such proposals over the first and the last 5 updates."""
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, lr=lr, normalize_advantages=True)
    space = strategy.space
    pool = space.options.ops.index("avg_pool_3x3")
    parents = [space.mutate(space.genome(["nor_conv_3x3"] * 6), np.random.default_rng(i))
               for i in range(8)]
    shares = []
    for _ in range(updates):
        proposals = strategy._propose(parents)
        flags = [record["insert"][-1][::3] == ["op", pool] for _, record in proposals]
        strategy.records = [{**record, "reward": 0.9 if flag else 0.1}
                            for (_, record), flag in zip(proposals, flags)]
        strategy._update()
        shares.append(np.mean(flags))
    return float(np.mean(shares[:5])), float(np.mean(shares[-5:]))


def test_reinforce_raises_the_probability_of_rewarded_decisions() -> None:
    first, last = pool_share(lr=0.02)
    control_first, control_last = pool_share(lr=1e-9)  # no learning: no drift
    assert last > first + 0.3 and last > control_last + 0.3
    assert abs(control_last - control_first) < 0.2


def test_episode_schedule_and_top_k_seeding() -> None:
    strategy = epnas.strategies.get("epnas", "nb201", seed=1, branches=4, steps=2,
                                    episodes=2, top_k=2)
    rewards = {}

    def reward(c) -> float:
        rewards[c.key] = (int(c.key, 16) % 97) / 100
        return rewards[c.key]

    asked = tell_all(strategy, reward) + tell_all(strategy, reward)
    assert [c.info["step"] for c in asked] == [0] * 4 + [1] * 4
    assert strategy.episode == 1 and strategy.step == 0
    top2 = sorted({c.key for c in asked}, key=lambda k: -rewards[k])[:2]
    assert [g.key for g in strategy.branches] == [top2[0], top2[1], top2[0], top2[1]]
    stats = strategy.stats()
    assert len(stats) == 1 and stats[0]["models"] == 8
    assert stats[0]["mean_reward"] == pytest.approx(np.mean([rewards[c.key] for c in asked]))
    tell_all(strategy, reward)
    tell_all(strategy, reward)
    assert strategy.done and strategy.ask() is None


def test_ask_waits_for_the_whole_step() -> None:
    strategy = epnas.strategies.get("epnas", "nb201", seed=2, branches=3, steps=2)
    batch = strategy.ask_batch(2)
    assert len(batch) == 2
    assert len(strategy.ask_batch(5)) == 1  # the rest of the step
    assert strategy.ask() is None  # waiting for results


def count_repeats(avoid: int) -> int:
    options = {**EPNAS.presets["tabular"], "avoid_repeats": avoid}
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, **options)
    seen, repeats = set(), 0
    for _ in range(5):  # 40 children of the best 4: far fewer than their ~96 neighbours
        for c in tell_all(strategy, lambda c: 0.5 + (int(c.key, 16) % 40) / 100):
            repeats += c.key in seen
            seen.add(c.key)
    return repeats


def test_avoid_repeats_proposes_unseen_networks() -> None:
    assert count_repeats(0) >= 5
    assert count_repeats(20) == 0


def test_policy_parameters_start_uniform_in_init_range() -> None:
    strategy = epnas.strategies.get("epnas", "cellwise", seed=0, init_range=0.05)
    assert isinstance(strategy.policy, Policy)
    values = torch.cat([p.detach().flatten() for p in strategy.policy.parameters()])
    assert values.abs().max() <= 0.05
