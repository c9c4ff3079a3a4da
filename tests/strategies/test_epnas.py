"""EPNAS specifics: masks and priors respected, REINFORCE learns, the episode schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epnas
import epnas.testing
from epnas.objective import Objective
from epnas.strategies.epnas import EPNAS, Policy, _masked_log_probs, _Novelty, _Row, run_policy
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
    strategy = epnas.strategies.get("epnas", space, seed=3, branches=16, steps=1,
                                    evaluate_start=False, explore=0)
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
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, lr=lr, prior_lr=lr,
                                    normalize_advantages=True, advantage="reward")
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
                                    episodes=2, top_k=2, evaluate_start=False, explore=0)
    rewards = {}

    def reward(c) -> float:
        rewards[c.key] = (int(c.key, 16) % 97) / 100
        return rewards[c.key]

    asked = tell_all(strategy, reward) + tell_all(strategy, reward)
    assert [c.info["step"] for c in asked] == [0] * 4 + [1] * 4
    assert strategy.episode == 1 and strategy.step == 0
    # stable on ties, like the selection: first asked first
    top2 = sorted(dict.fromkeys(c.key for c in asked), key=lambda k: -rewards[k])[:2]
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
    options = {**EPNAS.presets["tabular"], "avoid_repeats": avoid, "screen": 1}
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, **options)
    seen, repeats = set(), 0
    for _ in range(5):  # 40 children of the best 4: far fewer than their ~96 neighbours
        for c in tell_all(strategy, lambda c: 0.5 + (int(c.key, 16) % 40) / 100):
            repeats += c.key in seen
            seen.add(c.key)
    return repeats


def test_avoid_repeats_proposes_unseen_networks() -> None:
    assert count_repeats(0) >= 3
    assert count_repeats(20) == 0


def test_a_concentrated_policy_still_proposes_unseen_neighbours() -> None:
    # Re-sampling draws from the policy without the rejected decision paths, so even a
    # policy that always wants one op on one edge walks through the rest of the
    # neighbourhood, then on from a known network, instead of re-proposing.
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, branches=4, top_k=1,
                                    explore=0, lr=0)
    with torch.no_grad():
        for _name, head in strategy.policy.heads.items():
            head.bias[0] = 30.0  # kind=insert, place=edge 0, op=the first legal one
    seen: set[str] = set()
    for _ in range(12):  # 48 proposals from (mostly) one best network: 24 neighbours
        for c in tell_all(strategy, lambda c: 0.5):
            assert c.key not in seen
            seen.add(c.key)


def test_novelty_marks_a_prefix_dead_once_every_continuation_is() -> None:
    novelty = _Novelty()
    record = {"scale": [], "insert": [["kind", [True, True], None, 0],
                                      ["op", [True, False, True], None, 0]]}
    novelty.kill(record)
    assert novelty.mask((0,), [True, False, True]) == [False, False, True]
    assert not novelty.exhausted
    novelty.kill({**record, "insert": [record["insert"][0], ["op", [False, False, True],
                                                             None, 2]]})
    assert (0,) in novelty.dead and novelty.mask((), [True, True]) == [False, True]
    novelty.kill({"scale": [], "insert": [["kind", [False, True], None, 1]]})
    assert novelty.exhausted


def kind_shares(neighbour_prior: bool) -> dict[str, float]:
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, init_range=1e-6,
                                    neighbour_prior=neighbour_prior)
    space = strategy.space
    parents = [space.sample(np.random.default_rng(i)) for i in range(300)]
    kinds = [row["insert"][0][3] for _, row in strategy._propose(parents)]
    return {k: kinds.count(i) / len(kinds) for i, k in enumerate(("insert", "remove", "keep"))}


def test_the_untrained_policy_draws_each_neighbour_equally_often() -> None:
    # an nb201 cell has ~20 insert neighbours (an op on an edge), ~5 remove ones, 1 keep
    shares = kind_shares(True)
    assert shares["insert"] > 0.65 and shares["keep"] < 0.1
    assert kind_shares(False)["insert"] < 0.5  # uniform over the kinds


def test_policy_parameters_start_uniform_in_init_range() -> None:
    strategy = epnas.strategies.get("epnas", "cellwise", seed=0, init_range=0.05)
    assert isinstance(strategy.policy, Policy)
    values = torch.cat([p.detach().flatten() for p in strategy.policy.parameters()])
    assert values.abs().max() <= 0.05


def test_schedule_is_sized_from_the_budget_and_workers() -> None:
    from epnas.strategies.base import SearchContext

    strategy = epnas.strategies.get("epnas", "nb201", seed=0)
    strategy.attach(SearchContext(trials=300, workers=3))
    s = strategy.schedule
    assert s.branches % 3 == 0 and s.branches >= 3 and s.episodes is None
    assert strategy.planned_trials() is None  # runs until the study's budget
    small = epnas.strategies.get("epnas", "nb201", seed=0)
    small.attach(SearchContext(trials=24, workers=1))
    assert small.schedule.branches == 3  # selection every few queries on a small budget
    fixed = epnas.strategies.get("epnas", "nb201", seed=0, **EPNAS.presets["quick"])
    assert fixed.planned_trials() == (4 * (4 * 3 + 1), "4 episodes x 3 steps x 4 branches")


def test_the_critic_is_on_where_nothing_constrains_and_the_policy_learns() -> None:
    from epnas.objective import Constraint
    from epnas.strategies.base import SearchContext

    capped = SearchContext(trials=100, objective=Objective((Constraint("params", high=1e5),)))

    def screen(context: SearchContext, **options) -> int:
        strategy = epnas.strategies.get("epnas", "nb201", seed=0, **options)
        strategy.attach(context)
        return strategy.schedule.screen

    assert screen(SearchContext(trials=100)) == 4
    assert screen(capped) == 1
    assert screen(SearchContext(trials=100), lr=0) == 1  # the frozen control learns nothing
    assert screen(capped, screen=3) == 3
    assert screen(SearchContext(trials=100), **EPNAS.presets["paper"]) == 1


def test_default_epnas_uses_the_whole_budget_and_a_fixed_schedule_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    from epnas.study import Study

    with Study(space="nb201", strategy="epnas", trials=70) as study:
        assert study.run().trials == 70 and study.early_stop_warning() is None
    with Study(space="nb201", strategy="epnas", preset="quick", trials=70) as study:
        summary = study.run()
    assert summary.stop_reason == "strategy" and summary.trials == 52
    assert "ended after 52 of the 70 trials" in caplog.text


def test_a_frozen_policy_never_changes() -> None:
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, lr=0)  # the frozen control
    before = [p.detach().clone() for p in strategy.policy.parameters()]
    for _ in range(4):
        tell_all(strategy, lambda c: (int(c.key, 16) % 97) / 100)
    assert all(torch.equal(a, b) for a, b in zip(before, strategy.policy.parameters()))
    learned = epnas.strategies.get("epnas", "nb201", seed=0)
    for _ in range(4):
        tell_all(learned, lambda c: (int(c.key, 16) % 97) / 100)
    assert not all(torch.equal(a, b) for a, b in zip(before, learned.policy.parameters()))


def test_proposals_the_cost_model_finds_infeasible_are_drawn_again() -> None:
    from epnas.evaluators.tabular import TabularEvaluator
    from epnas.strategies.base import SearchContext

    costs = TabularEvaluator().costs
    objective = Objective.of(["params::101306"])  # a tenth of the cells (one 1x1 conv)
    asked = []
    for avoid in (0, 20):
        strategy = epnas.strategies.get("epnas", "nb201", seed=0, avoid_infeasible=avoid)
        strategy.attach(SearchContext(trials=100, objective=objective, costs=costs))
        batch = []
        for _ in range(6):
            batch += tell_all(strategy, lambda c: 0.5 + (int(c.key, 16) % 40) / 100)
        asked.append(np.mean([objective.feasible(costs(c.genome)) for c in batch]))
    assert asked[0] < 0.6 and asked[1] > 0.95


def test_proposals_over_a_limit_are_repaired_into_it_through_the_infeasible_network() -> None:
    from epnas.evaluators.tabular import TabularEvaluator
    from epnas.strategies.base import SearchContext

    def ops(genome) -> list[str]:
        return [edge.split("~")[0] for edge in genome.arch.split("|") if "~" in edge]

    costs = TabularEvaluator().costs
    objective = Objective.of(["params::316346"])  # one 3x3 conv, or 1x1 convs only
    edits = {}
    for repair in (0, 4):
        strategy = epnas.strategies.get("epnas", "nb201", seed=0, repair=repair, explore=0)
        strategy.attach(SearchContext(trials=200, objective=objective, costs=costs))
        genomes, children = {}, []
        for _ in range(12):
            batch = tell_all(strategy, lambda c: 0.5 + (int(c.key, 16) % 40) / 100)
            genomes.update({c.key: c.genome for c in batch})
            children += [c for c in batch if "parent" in c.info]
        assert all(objective.feasible(costs(c.genome)) for c in children)
        edits[repair] = [sum(a != b for a, b in zip(ops(c.genome), ops(genomes[c.info["parent"]])))
                         for c in children]
    assert max(edits[0]) == 1  # a NAS-Bench-201 step changes one edge
    assert max(edits[4]) > 1  # a step over the cap, then back inside it
    assert max(edits[4]) <= 1 + 4


def test_the_transform_advantage_credits_the_gain_over_the_parent() -> None:
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, lr=0, prior_lr=0)
    tell_all(strategy, lambda c: 0.5)  # the start networks
    batch = tell_all(strategy, lambda c: 0.6)  # every transformation gains 0.1
    assert all(c.info.get("parent") for c in batch if strategy.options.explore == 0)
    assert strategy.baseline == pytest.approx(0.1)  # the mean gain, not the mean reward


def test_the_critic_picks_each_screened_branch_s_proposal() -> None:
    """With ``screen`` draws per branch, the proposal evaluated is the draw the critic
    scores highest; a twin draw (the same network again) is dropped, not re-sampled."""
    strategy = epnas.strategies.get("epnas", "nb201", seed=0, branches=4, screen=3,
                                    critic_after=4, explore=0)
    score = {}

    def critic(genomes):
        return np.array([score.setdefault(g.key, float(np.random.default_rng(
            abs(hash(g.key)) % 2**32).random())) for g in genomes])

    strategy._critic = lambda drawn: critic
    draws: list[tuple[list[int], list]] = []
    draw = strategy._draw

    def spy(parents, rewards, groups):
        out = draw(parents, rewards, groups)
        draws.append((list(groups), out))
        return out

    strategy._draw = spy
    checked = 0
    for _ in range(6):
        draws.clear()
        batch = tell_all(strategy, lambda c: 0.5)
        if not draws or len(draws[0][0]) == 4:  # the start step, or before the critic
            continue
        groups, out = draws[0]
        for candidate in batch:
            b = candidate.info["branch"]
            mine = [d[0] for g, d in zip(groups, out) if g == b and d is not None]
            assert len({g.key for g in mine}) == len(mine)  # twins were dropped
            assert score[candidate.key] == max(score[g.key] for g in mine)
            checked += 1
    assert checked >= 8


def test_screened_searches_resume_exactly() -> None:
    epnas.testing.check_strategy("epnas", "nb201", options={
        "branches": 4, "episodes": 4, "screen": 2, "critic_after": 4, "optimism": 1.0},
        properties=["seeded", "resume", "resume-outstanding"])
