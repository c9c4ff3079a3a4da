"""The Study loop: caching, failures, budgets, best, executors, in-memory runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import epnas
from epnas.errors import EpnasError
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.executors import InlineExecutor
from epnas.store import Store
from epnas.study import Study, StudyFailed
from epnas.trial import Candidate, Result
from tests.study.helpers import Finite, Repeat, Sleepy, Unstable

SLEEPY = "tests.study.helpers:Sleepy"


def identities(study: Study) -> list[tuple]:
    """What a run did, comparable between runs: per trial its genome, status and result."""
    return [(t.key, t.fidelity, t.status, t.reason, t.source, dict(t.metrics), t.reward,
             t.feasible) for t in study.trials()]


def test_in_memory_random_search_spends_exactly_its_budget() -> None:
    study = Study(space="layerwise", strategy="random", evaluator="synthetic", trials=25,
                  max_params="200k", seed=3)
    summary = study.run()
    assert summary.trials == 25 and summary.stop_reason == "trials"
    assert sum(summary.counts.values()) == 25 and study.run_dir is None
    assert summary.feasible and summary.best.feasible
    feasible = [t for t in study.trials() if t.feasible]
    assert summary.best.reward == max(t.reward for t in feasible)
    assert summary.best.metrics["params"] <= 200_000
    assert all(t.fidelity == "full" for t in study.trials())  # the evaluator's default


def test_repeats_are_answered_from_the_store_as_cached() -> None:
    space = epnas.spaces.get("layerwise")
    evaluator = Sleepy()
    study = Study(strategy=Repeat(space, distinct=3), evaluator=evaluator, trials=10)
    study.run()
    trials = study.trials()
    assert [t.status for t in trials] == ["done"] * 3 + ["cached"] * 7
    assert evaluator.calls == 3
    for t in trials[3:]:
        original = trials[t.source - 1]
        assert original.key == t.key and original.metrics == t.metrics
        assert t.reward == original.reward
    assert [s for _, s in study.strategy.told] == ["done"] * 3 + ["cached"] * 7


def test_identical_candidates_in_one_batch_are_evaluated_once() -> None:
    space = epnas.spaces.get("layerwise")
    evaluator = Sleepy()
    study = Study(strategy=Repeat(space, distinct=2), evaluator=evaluator, trials=6,
                  executor=InlineExecutor(evaluator, workers=3))
    study.run()
    trials = study.trials()
    assert [t.status for t in trials] == ["done", "done", "cached", "cached", "cached", "cached"]
    assert evaluator.calls == 2 and trials[2].source == 1


def test_failures_do_not_stop_the_search() -> None:
    study = Study(strategy="random", evaluator=SLEEPY, evaluator_options={"raise_every": 3},
                  trials=12)
    summary = study.run()
    assert summary.trials == 12 and summary.counts["failed"] == 4
    failed = [t for t in study.trials() if t.status == "failed"]
    assert all(t.reason == "error" and "RuntimeError: boom" in t.error for t in failed)
    assert all(t.reward == 0.0 and t.feasible is False for t in failed)


def test_a_failure_streak_stops_the_run_with_a_diagnosis(tmp_path: Path) -> None:
    study = Study(strategy="random", evaluator=SLEEPY, evaluator_options={"raise_every": 1},
                  trials=50, max_consecutive_failures=4, out=tmp_path / "run")
    with pytest.raises(StudyFailed, match=r"5 trials in a row failed.*RuntimeError: boom"):
        study.run()
    assert study.stop_reason == "failures"
    assert study.store.counts() == {"failed": 5}
    assert study.store.checkpoint() is not None  # consistent: resumable once fixed
    study.close()


def test_nan_accuracy_is_a_diverged_failure() -> None:
    study = Study(strategy="random", evaluator="synthetic", evaluator_options={"nan_every": 2},
                  trials=4)
    study.run()
    statuses = [(t.status, t.reason) for t in study.trials()]
    assert statuses == [("done", None), ("failed", "diverged")] * 2


def test_strategy_done_ends_the_run() -> None:
    space = epnas.spaces.get("layerwise")
    study = Study(strategy=Finite(space, distinct=10), evaluator="synthetic", trials=100)
    assert study.run().stop_reason == "strategy" and len(study.trials()) == Finite.limit


def test_time_budget() -> None:
    study = Study(strategy="random", evaluator=SLEEPY, evaluator_options={"sleep": 0.05},
                  time=0.3, trials=None)
    summary = study.run()
    assert summary.stop_reason == "time" and 3 <= summary.trials <= 8
    assert summary.elapsed >= 0.3


def test_the_time_budget_stops_dispatch_inside_a_batch_and_more_time_finishes_it() -> None:
    evaluator = Sleepy(sleep=0.05)
    study = Study(strategy="random", evaluator=evaluator, time=0.3, trials=None,
                  executor=InlineExecutor(evaluator, workers=2))  # batches of 64
    summary = study.run()
    assert summary.stop_reason == "time" and summary.elapsed < 0.6  # not the whole batch
    counts = study.store.counts()
    assert counts["queued"] == 64 - counts["done"] and 3 <= counts["done"] <= 8
    assert study.strategy.told == 0  # an incomplete batch is not told

    summary = study.optimize(trials=70, time=60.0)  # the open batch first, then 6 more
    assert summary.stop_reason == "trials" and "queued" not in summary.counts
    done = [t for t in study.trials() if t.status == "done"]
    assert evaluator.calls == len(done) and study.strategy.told == 70
    assert [t.position for t in study.trials()[:64]] == list(range(64))


def test_a_run_stopped_by_time_mid_batch_resumes_without_evaluating_twice(
        tmp_path: Path) -> None:
    log = tmp_path / "evaluations.log"
    settings = {"strategy": "random", "evaluator": SLEEPY, "out": tmp_path / "run",
                "evaluator_options": {"sleep": 0.1, "log": str(log)}, "trials": None,
                "workers": 2}  # batches of 64
    with Study(time=2.5, **settings) as study:
        assert study.run().stop_reason == "time"
        first = {t.id: t for t in study.trials() if t.status == "done"}
        assert study.store.counts()["queued"] > 0 and first
    with Study(time=8.0, **settings) as study:
        study.run()
        after = {t.id: t for t in study.trials() if t.status == "done"}
    assert all(after[i].metrics == t.metrics for i, t in first.items())
    lines = log.read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(after) > len(first)


def test_no_feasible_model_reports_the_least_violating() -> None:
    study = Study(strategy="random", evaluator="synthetic", trials=8, max_params=10,
                  constraints=["flops::10"])
    summary = study.run()
    assert not summary.feasible and summary.best is not None
    assert set(summary.violations) == {"params", "flops"}
    objective = study.objective
    total = sum(objective.violations(summary.best.metrics).values())
    assert all(total <= sum(objective.violations(t.metrics).values())
               for t in study.trials())


def test_a_constraint_on_a_metric_the_evaluator_lacks_is_a_clear_error() -> None:
    with pytest.raises(EpnasError, match="constraint on 'latency': the synthetic evaluator "
                                         "does not report it; its metrics: accuracy, bytes"):
        Study(strategy="random", evaluator="synthetic", trials=3, constraints=["latency::5"])

    class Declares(SyntheticEvaluator):  # declares latency but does not report it
        metrics = ("accuracy", "latency")

    study = Study(strategy="random", evaluator=Declares(), trials=3, constraints=["latency::5"])
    with pytest.raises(EpnasError, match="'latency', but the evaluator reports only"):
        study.run()


def test_evaluator_instances_run_inline_only() -> None:
    with pytest.raises(EpnasError, match="runs inline only"):
        Study(strategy="random", evaluator=SyntheticEvaluator(), workers=2)
    with pytest.raises(EpnasError, match="evaluator_options apply when evaluator is given"):
        Study(strategy="random", evaluator=SyntheticEvaluator(), evaluator_options={"noise": 0})


def test_evaluator_context_and_options_errors() -> None:
    with pytest.raises(EpnasError, match="takes no 'dataset'"):
        Study(strategy="random", evaluator="synthetic", dataset="digits")
    with pytest.raises(EpnasError, match="evaluator 'synthetic' options"):
        Study(strategy="random", evaluator="synthetic", evaluator_options={"bogus": 1})
    with pytest.raises(EpnasError, match="unknown evaluator 'nope'"):
        Study(strategy="random", evaluator="nope")


def test_an_evaluator_exception_becomes_a_failed_result() -> None:
    class Broken(SyntheticEvaluator):
        def evaluate(self, candidate: Candidate) -> Result:
            raise ValueError("bad genome")

    study = Study(strategy="random", evaluator=Broken(), trials=2)
    study.run()
    assert {(t.reason, t.error) for t in study.trials()} == {("error", "ValueError: bad genome")}


def test_runs_are_reproducible_and_told_in_ask_order() -> None:
    runs = []
    for _ in range(2):
        study = Study(strategy="epnas", strategy_options={"branches": 3, "steps": 2},
                      evaluator="synthetic", trials=14, max_params="100k", seed=7)
        study.run()
        runs.append(identities(study))
    assert runs[0] == runs[1]


def test_process_pool_gives_the_same_results_as_inline() -> None:
    def run(workers: int, inline: bool) -> list[tuple]:
        kwargs = dict(strategy="epnas", strategy_options={"branches": 4, "steps": 2},
                      evaluator=SLEEPY, trials=12, max_params="100k", seed=1)
        if inline:
            evaluator = Sleepy()
            study = Study(executor=InlineExecutor(evaluator, workers=workers), **kwargs)
        else:
            study = Study(workers=workers, **kwargs)
        with study:
            study.run()
            return identities(study)

    inline = run(2, inline=True)
    pooled = run(2, inline=False)
    assert pooled == inline
    assert all(not math.isnan(t[-2]) for t in inline)


def test_resume_in_process_extends_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = dict(strategy="random", evaluator="synthetic", seed=2, out=out)
    with Study(trials=6, **settings) as study:
        study.run()
        first = identities(study)
    with Study(trials=10, **settings) as study:
        summary = study.run()
        assert identities(study)[:6] == first and summary.trials == 10
    with Study(trials=10, **{**settings, "out": None}) as reference, \
            Study(trials=10, **settings) as resumed:
        reference.run()
        assert identities(reference) == identities(resumed)


def test_other_config_is_refused_unless_force_new(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Study(strategy="random", evaluator="synthetic", trials=3, out=out) as study:
        study.run()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EpnasError, match=r"another configuration \(seed: 5 vs 0"):
        Study(strategy="random", evaluator="synthetic", trials=3, seed=5, out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with Study(strategy="random", evaluator="synthetic", trials=3, seed=5, out=out,
               force_new=True) as study:
        assert study.store.count() == 0
        study.run()
    [archive] = out.glob("replaced-*")
    assert (archive / "study.db").is_file() and (archive / "config.yaml").is_file()


def test_run_directory_layout(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Study(strategy="random", evaluator="synthetic", trials=3, out=out) as study:
        study.run()
    assert {"study.db", "trials.csv", "config.yaml", "env.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "lock").exists()
    assert "strategy: random" in (out / "config.yaml").read_text()


def test_ctrl_c_requeues_and_the_same_study_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = dict(strategy="random", trials=6, seed=4, out=out)
    with Study(evaluator=Sleepy(interrupt_at=5), **settings) as study, \
            pytest.raises(KeyboardInterrupt):
        study.run()
    with Study(evaluator=Sleepy(), **settings) as study:
        assert [t.status for t in study.trials()] == ["done"] * 4 + ["queued"]
        study.run()
        resumed = identities(study)
    with Study(evaluator=Sleepy(), **{**settings, "out": None}) as reference:
        reference.run()
        assert resumed == identities(reference)


def test_replay_of_a_strategy_that_asks_something_else(tmp_path: Path) -> None:
    """Finished trials the restored strategy does not ask again stay, detached; unfinished
    ones are dropped; nothing is evaluated twice."""
    out = tmp_path / "run"
    space = epnas.spaces.get("layerwise")

    def study(evaluator: Sleepy) -> Study:
        return Study(strategy=Unstable(space), evaluator=evaluator, trials=6, out=out,
                     executor=InlineExecutor(evaluator, workers=2))

    with study(Sleepy(interrupt_at=5)) as first, pytest.raises(KeyboardInterrupt):
        first.run()
    with Store(out, readonly=True) as store:
        before = store.trials()
    # a parallel batch dispatches its largest networks first: which trials of the second
    # batch finished depends on their sizes, not on their ask order
    done = [t for t in before if t.status == "done"]
    unfinished = [t.id for t in before if t.status == "queued"]
    assert len(done) == 4 and len(unfinished) == 2 and len(before) == 6
    evaluator = Sleepy()
    with study(evaluator) as second:
        second.run()
        after = {t.id: t for t in second.trials()}
    for t in done:
        assert after[t.id].position is None and after[t.id].result == t.result
    assert not set(unfinished) & set(after)
    replayed = [t for i, t in after.items() if i > 6]
    assert len(replayed) == 6 and all(t.position is not None for t in replayed)
    assert evaluator.calls == sum(t.status == "done" for t in replayed)


class Recording(InlineExecutor):
    """Inline executor that records the order jobs are dispatched in."""

    def __init__(self, evaluator, workers: int) -> None:
        super().__init__(evaluator, workers)
        self.batches: list[list[int]] = []

    def run(self, jobs, stop=None):
        self.batches.append([job.trial_id for job in jobs])
        return super().run(jobs, stop)


def test_a_batch_dispatches_its_largest_networks_first() -> None:
    evaluator = SyntheticEvaluator()
    executor = Recording(evaluator, workers=2)  # random search: batches of 2 x 32
    with Study(strategy="random", evaluator=evaluator, executor=executor, trials=80) as study:
        study.run()
        trials = {t.id: t for t in study.trials()}
    assert len(executor.batches) == 2  # 64 and 16 asked, repeats answered from the store
    assert len(executor.batches[0]) > 32 and len(executor.batches[1]) > 8
    for batch in executor.batches:
        flops = [trials[i].metrics["flops"] for i in batch]
        assert flops == sorted(flops, reverse=True)
    assert any(batch != sorted(batch) for batch in executor.batches)  # not the ask order
