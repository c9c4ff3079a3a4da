"""PNAS: cells grow one unit per round; the surrogate ranks unseen cells well."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from scipy.stats import kendalltau

import epnas
from epnas import EpnasError, strategies
from epnas.evaluators import SyntheticEvaluator, TabularEvaluator, tabular
from epnas.objective import Objective
from epnas.strategies.surrogate import Encoder, Surrogate
from epnas.testing import drive
from epnas.trial import Candidate


@pytest.fixture(scope="module")
def table() -> TabularEvaluator:
    try:
        return TabularEvaluator(tabular.default_path())
    except EpnasError as exc:
        pytest.skip(f"needs the NAS-Bench-201 table: {exc}")


def test_surrogate_ranks_held_back_results_better_than_random(table: TabularEvaluator) -> None:
    space = epnas.spaces.get("nb201")
    items = table.items()
    order = np.random.default_rng(0).permutation(len(items))
    train, held = [items[i] for i in order[:150]], [items[i] for i in order[150:1150]]
    encoder = Encoder(space)
    surrogate = Surrogate(seed=0).fit(encoder([space.from_arch(a) for a, _ in train]),
                                      np.array([v for _, v in train]))
    predicted = surrogate.predict(encoder([space.from_arch(a) for a, _ in held]))
    truth = [v for _, v in held]
    tau = kendalltau(predicted, truth).statistic
    chance = kendalltau(np.random.default_rng(1).permutation(len(held)), truth).statistic
    assert tau > 0.3 and abs(chance) < 0.1


def test_nb201_cells_grow_one_edge_per_round(table: TabularEvaluator) -> None:
    strategy = strategies.get("pnas", "nb201", seed=0, beam=5)
    run = drive(strategy, table, Objective(), n_trials=24 + 5 * 5 + 10)
    rounds: dict[int, list] = defaultdict(list)
    for candidate in run.candidates:
        rounds[candidate.info["round"]].append(candidate)
    # the first round is every one-edge cell: 6 edges x 4 ops
    assert len(rounds[0]) == 24 and {c.info["size"] for c in rounds[0]} == {1}
    for r in range(1, 6):
        assert len(rounds[r]) == 5 and {c.info["size"] for c in rounds[r]} == {r + 1}
        before = {c.key for c in rounds[r - 1]}
        for c in rounds[r]:  # each is an expansion of a cell of the previous round
            ops = c.genome.ops
            assert any(epnas.spaces.get("nb201").genome(
                [op if i != e else "none" for i, op in enumerate(ops)]).key in before
                for e in range(6) if ops[e] != "none")
    # once the cells are full, it goes on around the best ones: never a repeat
    assert {c.info["size"] for c in rounds[6]} == {6}
    keys = [c.key for c in run.candidates]
    assert len(keys) == len(set(keys))


def test_expansions_are_ranked_by_the_surrogate(table: TabularEvaluator) -> None:
    # on the table, the cells PNAS picks at two edges beat random two-edge cells
    chosen, rng = [], np.random.default_rng(0)
    space = epnas.spaces.get("nb201")
    for seed in range(3):
        strategy = strategies.get("pnas", "nb201", seed=seed, beam=8)
        run = drive(strategy, table, Objective(), n_trials=24 + 8)
        chosen += [r.accuracy for c, r in zip(run.candidates, run.results)
                   if c.info["round"] == 1]
    random_two = [table.evaluate(Candidate(space.sample(rng, depth=2))).accuracy
                  for _ in range(200)]
    assert np.mean(chosen) > np.mean(random_two)


def test_cellwise_branches_grow() -> None:
    strategy = strategies.get("pnas", "cellwise", seed=0, beam=4, initial=6)
    run = drive(strategy, SyntheticEvaluator(), Objective(), n_trials=6 + 3 * 4)
    sizes = [(c.info["round"], c.info["size"]) for c in run.candidates]
    assert sizes == [(0, 1)] * 6 + [(1, 2)] * 4 + [(2, 3)] * 4 + [(3, 4)] * 4
