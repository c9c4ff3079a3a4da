"""The dna strategy: exact assembly under constraints, its schedule, and a search end to end."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas import EpnasError
from epnas.cli import main
from epnas.objective import Objective
from epnas.strategies import get
from epnas.strategies.base import SearchContext
from epnas.strategies.dna import aggregated, assemble, rating
from epnas.testing import drive
from epnas.trial import Result
from tests.evaluators.test_distill import save_teacher

ROOT = Path(__file__).resolve().parents[2]
SPACE = epnas.spaces.get("layerwise")
PLAN = [((3, 16, 16), (16, 8, 8)), ((16, 8, 8), (32, 4, 4)), ((32, 4, 4), (32, 4, 4))]


def table(seed: int, per_block: int = 5) -> tuple[list[list[epnas.Genome]], list[list[float]]]:
    """Random parts for PLAN's blocks and a random rating table (one part failed)."""
    rng = np.random.default_rng(seed)
    parts = [[SPACE.sample_block(rng, k, len(PLAN), i, o) for _ in range(per_block)]
             for k, (i, o) in enumerate(PLAN)]
    ratings = [list(rng.uniform(0, 1, per_block)) for _ in PLAN]
    ratings[1][0] = math.inf
    return parts, ratings


def costs(genome: epnas.Genome) -> dict[str, float]:
    return SPACE.cost(genome, PLAN[0][0], 10).as_dict()


def brute_force(parts: list[list[epnas.Genome]], ratings: list[list[float]],
                objective: Objective) -> float:
    best = math.inf
    for choice in itertools.product(*(range(len(row)) for row in parts)):
        total = sum(ratings[k][j] for k, j in enumerate(choice))
        genome = SPACE.assemble([parts[k][j] for k, j in enumerate(choice)])
        if objective.feasible(costs(genome)) and total < best:
            best = total
    return best


@pytest.mark.parametrize("constraints", [["params::40k"], ["params::60k", "flops::3M"],
                                         ["intensity:2:"], ["memory::30M", "params:5k:"]])
def test_the_assembly_is_the_best_feasible_choice(constraints: list[str]) -> None:
    objective = Objective.of(constraints)
    for seed in range(4):
        parts, ratings = table(seed)
        found = assemble(SPACE, PLAN, parts, ratings, objective, costs)
        best = brute_force(parts, ratings, objective)
        assert found is not None
        if math.isfinite(best):
            assert found.feasible and found.method == "exact"
            assert found.rating == pytest.approx(best)
            assert found.genome == SPACE.assemble(
                [parts[k][j] for k, j in enumerate(found.choice)])
            assert objective.feasible(costs(found.genome))
        else:  # nothing feasible: the least-violating assembly
            assert not found.feasible


def test_without_constraints_each_block_takes_its_best_part_and_a_beam_still_assembles() -> None:
    parts, ratings = table(7)
    found = assemble(SPACE, PLAN, parts, ratings, Objective(), costs)
    assert found is not None
    assert found.choice == tuple(int(np.argmin(row)) for row in ratings)
    beamed = assemble(SPACE, PLAN, parts, ratings, Objective.of(["params::40k"]), costs, beam=2)
    assert beamed is not None and beamed.method == "beam 2"
    ratings[0] = [math.inf] * len(ratings[0])
    assert assemble(SPACE, PLAN, parts, ratings, Objective(), costs) is None
    with pytest.raises(EpnasError, match="not on 'latency'"):
        assemble(SPACE, PLAN, parts, ratings, Objective.of(["latency::2"]), costs)


def test_ratings_prefer_the_distillation_loss() -> None:
    assert rating(Result("done", {"accuracy": 0.9, "distill_loss": 0.25})) == 0.25
    assert rating(Result("done", {"accuracy": 0.9})) == pytest.approx(0.1)
    assert rating(Result.failure("error", "x")) == math.inf


def test_ratings_are_made_comparable_between_blocks_before_they_add_up() -> None:
    ratings = [[0.2, 0.4, 0.6], [10.0, 50.0, math.inf], [3.0, 3.0, 3.0]]
    assert aggregated(ratings, "sum") == ratings
    z = aggregated(ratings, "zscore")
    for row in z[:2]:
        finite = [r for r in row if math.isfinite(r)]
        assert np.mean(finite) == pytest.approx(0) and np.std(finite) == pytest.approx(1)
    assert z[1][2] == math.inf and z[2] == [0.0, 0.0, 0.0]
    assert aggregated(ratings, "rank") == [[0.0, 0.5, 1.0], [0.0, 1.0, math.inf],
                                           [0.5, 0.5, 0.5]]
    with pytest.raises(EpnasError, match="aggregate"):
        aggregated(ratings, "mean")


class Plan:
    """An evaluator-like object with a teacher's block plan (what ``distill`` offers)."""

    def block_plan(self) -> list:
        return PLAN

    def costs(self, genome: epnas.Genome) -> dict[str, float]:
        return costs(genome)


def test_the_strategy_rates_every_block_then_asks_the_assembled_network() -> None:
    strategy = get("dna", SPACE, seed=1, per_block=3, final="full")
    plan = Plan()
    strategy.attach(SearchContext(objective=Objective.of(["params::50k"]), costs=plan.costs,
                                  evaluator=plan))
    assert strategy.planned_trials() == (10, "3 blocks x up to 3 parts + 1 assembled")
    evaluator = epnas.evaluators.SyntheticEvaluator((3, 16, 16))
    run = drive(strategy, evaluator, Objective.of(["params::50k"]), 20)
    assert strategy.done and len(run.candidates) == 10
    assert [c.fidelity for c in run.candidates] == ["block=0"] * 3 + ["block=1"] * 3 + \
        ["block=2"] * 3 + ["full"]
    final = run.candidates[-1]
    assert final.info["origin"] == "assembled" and final.info["assembly"] == "exact"
    assert costs(final.genome)["params"] <= 50_000
    assert [row["block"] for row in strategy.stats()] == [0.0, 1.0, 2.0]
    assert strategy.report_fidelity == "full"


@pytest.mark.parametrize("budget, per_block", [(20, [7, 6, 6]), (11, [4, 3, 3]),
                                               (None, [32] * 3)])
def test_parts_per_block_are_sized_so_the_assembly_ends_the_budget(
        budget: int | None, per_block: list[int]) -> None:
    strategy = get("dna", SPACE, seed=2)
    plan = Plan()
    strategy.attach(SearchContext(trials=budget, objective=Objective.of(["params::50k"]),
                                  costs=plan.costs, evaluator=plan))
    planned = strategy.planned_trials()
    assert planned is not None and [len(row) for row in strategy.parts] == per_block
    assert planned[0] == sum(per_block) + 1 == (budget or 97)
    run = drive(strategy, epnas.evaluators.SyntheticEvaluator((3, 16, 16)),
                Objective.of(["params::50k"]), budget or 200)
    assert strategy.done and len(run.candidates) == planned[0]
    assert run.candidates[-1].info["origin"] == "assembled"


def test_a_budget_without_room_for_the_assembly_is_refused() -> None:
    strategy = get("dna", SPACE, seed=0)
    plan = Plan()
    strategy.attach(SearchContext(trials=3, costs=plan.costs, evaluator=plan))
    with pytest.raises(EpnasError, match=r"needs at least 4 trials .* the budget is 3"):
        strategy.planned_trials()


@pytest.mark.parametrize("how", ["zscore", "rank"])
def test_the_strategy_assembles_on_the_aggregated_ratings(how: str) -> None:
    objective = Objective.of(["params::40k"])
    strategy = get("dna", SPACE, seed=3, per_block=4, aggregate=how)
    plan = Plan()
    strategy.attach(SearchContext(objective=objective, costs=plan.costs, evaluator=plan))
    evaluator = epnas.evaluators.SyntheticEvaluator((3, 16, 16))
    drive(strategy, evaluator, objective, 20)
    final = strategy.final
    assert final is not None and final.info["aggregate"] == how
    table = aggregated(strategy.ratings, how)  # type: ignore[arg-type]
    assert final.info["aggregated_rating"] == pytest.approx(
        brute_force(strategy.parts, table, objective))
    assert final.info["ratings"] == [strategy.ratings[k][j]
                                     for k, j in enumerate(final.info["parts"])]
    assert final.info["rating"] == pytest.approx(sum(final.info["ratings"]))


def teacher_plan(space: epnas.Space, input_shape: tuple[int, int, int]) -> list:
    """The block plan of a random network of ``space`` (a teacher's, without training)."""
    plan, shape = [], input_shape
    for k, part in enumerate(space.blocks(space.draw(np.random.default_rng(0)))):
        out = space.block_shape(part, k, shape)
        plan.append((shape, out))
        shape = out
    return plan


@pytest.mark.parametrize(("name", "input_shape", "cap"),
                         [("multistage", (1, 8, 8), "25k"), ("layerwise", (3, 16, 16), "8k")])
def test_parts_are_aimed_at_the_constraints_so_a_tight_cap_assembles(
        name: str, input_shape: tuple[int, int, int], cap: str) -> None:
    # multistage: the smallest network has 18.1k params, a random one about 100k; parts
    # drawn blind summed to far above the cap, and no assembly was feasible
    space = epnas.spaces.get(name)
    plan = teacher_plan(space, input_shape) if name == "multistage" else PLAN
    objective = Objective.of([f"params::{cap}"])

    class Teacher:
        def block_plan(self) -> list:
            return plan

    for seed in range(4):
        strategy = get("dna", space, seed=seed, per_block=4)
        strategy.attach(SearchContext(objective=objective, evaluator=Teacher(), costs=lambda g:
                                      space.cost(g, input_shape, 10).as_dict()))
        run = drive(strategy, epnas.evaluators.SyntheticEvaluator(input_shape), objective, 30)
        final = run.candidates[-1]
        assert final.info["feasible_plan"], seed
        assert space.cost(final.genome, input_shape, 10).params <= objective.constraints[0].high
        assert all(len(parts) >= 2 for parts in strategy.parts)  # still a choice per block


def test_a_cap_no_assembly_meets_is_refused_in_one_line_before_any_training() -> None:
    space = epnas.spaces.get("multistage")
    strategy = get("dna", space, seed=0, per_block=2)

    class Teacher:
        def block_plan(self) -> list:
            return teacher_plan(space, (1, 8, 8))

    strategy.attach(SearchContext(objective=Objective.of(["params::15k"]), evaluator=Teacher(),
                                  costs=lambda g: space.cost(g, (1, 8, 8), 10).as_dict()))
    with pytest.raises(EpnasError, match=r"can assemble no network .* params 18,136 > 15,000"):
        strategy.planned_trials()


@pytest.mark.slow
def test_search_from_the_cli_with_a_teacher(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    argv = ["search", "--space", "layerwise", "--space-opt", "max_layers=6",
            "--space-opt", "channels=8,16", "--strategy", "dna", "--strategy-opt", "per_block=2",
            "--evaluator", "distill", "--evaluator-opt", f"teacher={teacher}",
            "--evaluator-opt", "samples=200", "--evaluator-opt", "schedule={epochs: 1}",
            "--dataset", "digits", "--trials", "20", "--max-params", "20k", "--out", str(out),
            "--quiet", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    best = summary["best"]
    assert summary["trials"] == 7 and best["fidelity"] == "prediction"
    assert best["info"]["origin"] == "assembled" and best["metrics"]["params"] <= 20_000
    assert (out / "trials" / str(best["id"]) / "model.pt").is_file()
    # resuming a finished run evaluates nothing again
    assert main(["resume", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 7


@pytest.mark.slow
def test_the_ranking_benchmark_runs(tmp_path: Path) -> None:
    def run(*extra: str) -> dict:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "dna_ranking.py"), "--dataset",
             "digits", "--train-samples", "400", "--val-samples", "100", "--archs", "4",
             "--per-block", "2", "--channels", "8,16", "--max-layers", "6",
             "--aggregate", "zscore", "--out", str(tmp_path / "bench"), *extra],
            cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads((tmp_path / "bench" / "summary.json").read_text())

    summary = run()
    assert summary["archs"] == 4 and summary["block_trials"] == 6
    assert summary["train_images"] == 400 and summary["val_images"] == 100
    assert summary["dna"]["kendall_tau"] == summary["dna_by_aggregate"]["zscore"]["kendall_tau"]
    assert [row["block"] for row in summary["per_block_diagnosis"]] == [0, 1, 2]
    assert -1 <= summary["dna"]["kendall_tau"] <= 1 and summary["dna"]["cpu_seconds"] > 0
    assert summary["assembled"]["params"] < summary["teacher_params"]
    assert "init_blocks" not in summary["assembled"] and "repeats" not in summary["assembled"]
    # the assembly again from its parts' weights and the teacher's logits, trained twice
    # beside a second training of the teacher: only they train
    again = run("--init", "parts", "--kd", "0.5", "--repeats", "2")
    assert again["assembled"]["describe"] == summary["assembled"]["describe"]
    assert again["assembled"]["init_blocks"] == 3 and again["assembled"]["kd"] == 0.5
    assert again["rows"] == summary["rows"]
    repeats = again["assembled"]["repeats"]
    assert repeats["train_seeds"] == [0, 1]
    assert repeats["assembled"][0] == again["assembled"]["accuracy"]
    assert repeats["teacher"][0] == summary["teacher"]["accuracy"]
    assert all(0 <= a <= 1 for a in repeats["assembled"] + repeats["teacher"])


def test_an_evaluator_that_cannot_rate_blocks_is_refused_before_the_run() -> None:
    strategy = get("dna", SPACE)
    training = epnas.evaluators.TrainingEvaluator("digits")
    with pytest.raises(EpnasError, match="--evaluator distill --evaluator-opt teacher=PATH"):
        strategy.attach(SearchContext(costs=training.costs, evaluator=training))
