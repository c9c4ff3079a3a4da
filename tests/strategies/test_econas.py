"""EcoNAS: a generation climbs the fidelity levels, only the configured share goes up."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import pytest

import epnas
from epnas import strategies
from epnas.evaluators import SyntheticEvaluator
from epnas.objective import Objective
from epnas.testing import drive


@pytest.mark.parametrize(("generation", "promote", "sizes"), [
    (10, 0.3, [10, 3, 1]),
    (8, 0.5, [8, 4, 2]),
    (6, 1.0, [6, 6, 6]),
])
def test_promotes_exactly_the_configured_share(generation: int, promote: float,
                                               sizes: list[int]) -> None:
    levels = ["c=0.25,r=0.5,s=0.5,e=5", "c=0.5,r=1,s=1,e=10", "full"]
    strategy = strategies.get("econas", "layerwise", seed=1, generation=generation,
                              promote=promote, levels=levels, population=4)
    run = drive(strategy, SyntheticEvaluator(), Objective(), n_trials=3 * sum(sizes))
    by_round: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for candidate, result in zip(run.candidates, run.results):
        assert candidate.fidelity == levels[candidate.info["level"]]
        by_round[candidate.info["round"]][candidate.fidelity].append((candidate, result))
    assert sorted(by_round) == [0, 1, 2]
    for rounds in by_round.values():
        assert [len(rounds[level]) for level in levels] == sizes
        for lower, upper in pairwise(levels):
            # the promoted genomes are the best of the level below, by its reward
            ranked = sorted(rounds[lower], key=lambda cr: -cr[1].reward)
            best = {c.key for c, _ in ranked[: len(rounds[upper])]}
            assert {c.key for c, _ in rounds[upper]} == best


def test_only_last_level_survivors_enter_the_population() -> None:
    strategy = strategies.get("econas", "nb201", seed=0, generation=6, promote=0.5,
                              population=5, sample=2)
    assert strategy.levels == ("12ep", "200ep")
    run = drive(strategy, SyntheticEvaluator((3, 32, 32)), Objective(), n_trials=60)
    full = {c.key for c in run.candidates if c.fidelity == "200ep"}
    population = strategy.state_dict()["population"]
    assert len(population) == 5 and {m["key"] for m in population} <= full
    # mutations start once `population` genomes were fully evaluated, from members only
    mutated = [c for c in run.candidates if c.info["origin"] == "mutation"]
    assert mutated and all(c.info["parent"] in full for c in mutated)
    first_mutation = run.candidates.index(mutated[0])
    assert sum(c.fidelity == "200ep" for c in run.candidates[:first_mutation]) >= 5


def test_levels_default_to_reduced_training_then_full() -> None:
    strategy = strategies.get("econas", epnas.spaces.get("cellwise"))
    assert strategy.levels == ("c=0.25,r=0.5,s=0.5,e=5", "full")


@pytest.mark.parametrize(("given", "levels"), [
    ("12ep,200ep", ("12ep", "200ep")),
    (["c=0.25", "r=0.5", "s=0.5", "e=5", "full"], ("c=0.25,r=0.5,s=0.5,e=5", "full")),
    ("c=0.25,e=5,c=0.5,e=10,prediction", ("c=0.25,e=5", "c=0.5,e=10", "prediction")),
    (["c=0.25,r=0.5,s=0.5,e=5", "full"], ("c=0.25,r=0.5,s=0.5,e=5", "full")),
])
def test_levels_from_the_command_line(given: object, levels: tuple[str, ...]) -> None:
    assert strategies.get("econas", "layerwise", levels=given).levels == levels


def test_the_run_reports_its_best_from_the_top_level_only(tmp_path) -> None:
    """Cheap levels rank candidates; the best a run reports (summary, status, load_run,
    retrain and export) is a trial at the last level, even when a cheap trial scored more."""
    levels = ["cheap", "full"]
    # proxy noise large enough that some cheap trial beats every full one
    options = {"levels": levels, "generation": 6, "promote": 0.34, "population": 2}
    with epnas.Study(space="layerwise", strategy="econas", strategy_options=options,
                     evaluator="synthetic", evaluator_options={"proxy_noise": 0.3},
                     trials=16, out=tmp_path / "run") as study:
        study.run()
        trials = study.trials()
        best = study.best()
    cheap = max(t.accuracy for t in trials if t.fidelity == "cheap")
    assert cheap > max(t.accuracy for t in trials if t.fidelity == "full")
    assert best.fidelity == "full"
    assert best == max((t for t in trials if t.fidelity == "full" and t.feasible),
                       key=lambda t: t.reward)
    assert epnas.load_run(tmp_path / "run").best().id == best.id
