"""A memory-hungry candidate never takes the machine down (issue 16, item 1): one that
cannot fit is refused with reason ``memory`` before it starts, one that fits only alone
waits for the running trials."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from epnas.executors import EvaluatorSpec, Job, ProcessExecutor, available_memory
from epnas.spaces import get
from epnas.study import Study
from epnas.trial import Candidate


def test_a_candidate_above_the_memory_is_refused_before_it_starts(tmp_path: Path) -> None:
    log = tmp_path / "evaluated.log"
    with Study(space="nb201", strategy="random", evaluator="tests.study.helpers:Hungry",
               evaluator_options={"huge_below": 5, "log": str(log)}, trials=20) as study:
        study.run()
        trials = study.trials()
    refused = [t for t in trials if t.status == "failed"]
    assert refused and all(t.reason == "memory" for t in refused)
    assert all(t.key[0].isdigit() and int(t.key[0]) < 5 for t in refused)
    assert "estimated training memory 1000000000.00 GB is more than the" in refused[0].error
    evaluated = {line.split()[0] for line in log.read_text().splitlines()}
    assert not evaluated & {t.key for t in refused}  # never started
    assert {t.key for t in trials if t.status == "done"} <= evaluated


def test_trials_that_fit_only_alone_wait_for_each_other() -> None:
    space = get("nb201")

    rng = np.random.default_rng(0)
    jobs = [Job(i, Candidate(space.sample(rng), None, {}), memory=0.6e9) for i in range(4)]

    spec = EvaluatorSpec("tests.study.helpers:Sleepy", {"sleep": 0.3}, {})
    with ProcessExecutor(spec, 2) as pool:
        pool.memory = 1e9  # one at a time
        alone = sorted((o.start, o.end) for o in pool.run(jobs))
        pool.memory = 1.2e9  # two at a time
        together = sorted((o.start, o.end) for o in pool.run(jobs))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(alone))  # never overlapped
    assert any(a[1] > b[0] for a, b in itertools.pairwise(together))
    assert available_memory() is None or available_memory() > 0
