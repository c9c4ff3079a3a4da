"""Several workers per GPU: slots, auto sizing, GPU memory checks before dispatch, and CUDA
out-of-memory as a failed trial (GPU counts and free memory injected: no GPU needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import epnas
import epnas.evaluators.training as training
import epnas.executors
import epnas.study
from epnas.executors import (
    CUDA_CONTEXT_MEMORY,
    EvaluatorSpec,
    Job,
    ProcessExecutor,
    gpu_workers,
    pin_devices,
)
from epnas.study import Study
from epnas.trial import Candidate, Result
from tests.study.helpers import Sleepy


class OutOfMemory(Sleepy):
    """:class:`Sleepy` whose every ``every``-th evaluation runs out of CUDA memory."""

    def __init__(self, every: int = 2, **options: Any) -> None:
        super().__init__(**options)
        self.every = every

    def evaluate(self, candidate: Candidate) -> Result:
        result = super().evaluate(candidate)
        if self.calls % self.every == 0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return result


def jobs(memories: list[float]) -> list[Job]:
    space = epnas.spaces.get("layerwise")
    rng = np.random.default_rng(0)
    return [Job(i + 1, Candidate(space.sample(rng), "full"), memory=m)
            for i, m in enumerate(memories)]


def test_n_workers_per_gpu_give_n_slots_on_each() -> None:
    limit = gpu_workers(3, count=2)
    assert limit.workers == 6 and limit.reason is None
    devices = pin_devices(limit.workers, visible="4,7", count=2)
    assert sorted(devices) == ["4"] * 3 + ["7"] * 3
    assert gpu_workers(2, count=0).workers == 0  # no GPU: --workers decides
    with pytest.raises(epnas.EpnasError):
        gpu_workers(0, count=1)


def test_auto_sizes_workers_from_free_memory_and_cores() -> None:
    each = CUDA_CONTEXT_MEMORY + 1.5e9
    limit = gpu_workers("auto", trial_memory=1.5e9, count=1, free=[5.5 * each], cores=16)
    assert limit.workers == 5 and "GB free per GPU" in str(limit)
    # the least free GPU decides; cores cap it at cores // GPUs
    assert gpu_workers("auto", trial_memory=1.5e9, count=2, free=[100 * each, 2 * each],
                       cores=16).workers == 4
    assert gpu_workers("auto", trial_memory=1e6, count=2, free=[1e12, 1e12],
                       cores=6).workers == 6
    assert gpu_workers("auto", trial_memory=1e12, count=1, free=[1e9], cores=8).workers == 1


def test_a_trial_above_the_gpu_share_is_refused_and_the_others_run() -> None:
    with ProcessExecutor(EvaluatorSpec("tests.study.helpers:Sleepy"), workers=2,
                         devices=["0", "0"], elastic=False) as pool:
        pool.gpu_memory = 1e9
        outcomes = {o.trial_id: o.result for o in pool.run(jobs([2e9, 1e8, 1e8]))}
    assert outcomes[1].reason == "memory" and "GPU memory" in (outcomes[1].error or "")
    assert outcomes[2].status == outcomes[3].status == "done"


def test_trials_that_fit_one_gpu_only_alone_wait_for_each_other() -> None:
    with ProcessExecutor(EvaluatorSpec("tests.study.helpers:Sleepy", {"sleep": 0.3}),
                         workers=2, devices=["0", "0"], elastic=False) as pool:
        pool.gpu_memory = 3e9
        outcomes = sorted(pool.run(jobs([2e9, 2e9])), key=lambda o: o.start)
    assert all(o.result.status == "done" for o in outcomes)
    assert outcomes[1].start >= outcomes[0].end - 0.05  # never both on the GPU


def test_cuda_out_of_memory_fails_the_trial_and_the_search_goes_on() -> None:
    study = Study(strategy="random", evaluator="tests.study.test_gpu_workers:OutOfMemory",
                  workers=2, trials=4)
    with study:
        study.run()
        trials = study.trials()
    assert len(trials) == 4
    assert {t.reason for t in trials if t.status != "done"} == {"oom"}
    assert sum(t.status == "done" for t in trials) >= 1


class _Exhausting(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")


def test_out_of_memory_inside_training_is_reason_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "build_seeded", lambda *args: nn.Sequential(
        nn.Conv2d(1, 1, 1), _Exhausting()))
    evaluator = training.TrainingEvaluator("digits", device="cpu")
    genome = epnas.spaces.get("layerwise").sample(np.random.default_rng(0))
    result = evaluator.evaluate(Candidate(genome, "full"))
    assert result.status == "failed" and result.reason == "oom"


def test_workers_per_gpu_setting_and_a_machine_without_gpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    config = epnas.config.StudyConfig(workers_per_gpu="2")
    assert config.workers_per_gpu == 2
    with pytest.raises(ValueError):
        epnas.config.StudyConfig(workers_per_gpu=0)
    study = Study(strategy="random", evaluator="tests.study.helpers:Sleepy",
                  workers_per_gpu="auto", trials=2)
    with study:  # no GPU: --workers (1) decides
        study.run()
        assert study.config.workers == 1 and len(study.trials()) == 2


def one_gpu(monkeypatch: pytest.MonkeyPatch, free: float) -> None:
    """A machine of 4 cores and one GPU with ``free`` bytes free (its workers run on CPU)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(epnas.executors, "available_cores", lambda: 4)
    monkeypatch.setattr(epnas.study, "gpu_free_memory", lambda: [free])


def test_a_study_sizes_auto_workers_from_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    one_gpu(monkeypatch, free=2 * (CUDA_CONTEXT_MEMORY + 1e9) + 1e8)
    study = Study(strategy="random", evaluator="tests.study.helpers:Hungry",
                  evaluator_options={"memory": 1e9}, workers_per_gpu="auto", trials=4)
    with study:
        assert study.config.workers == 2  # not 4 (cores): the GPU holds two trials
        assert "GB free per GPU" in str(study.worker_limit)
        study.run()
        assert all(t.status == "done" for t in study.trials())


def test_a_study_refuses_trials_above_the_gpu_share(monkeypatch: pytest.MonkeyPatch) -> None:
    one_gpu(monkeypatch, free=3.5e9)  # two workers: 2.5 GB for their trials
    study = Study(strategy="random", evaluator="tests.study.helpers:Hungry",
                  evaluator_options={"memory": 1e8, "huge": 2.6e9, "huge_below": 8},
                  workers_per_gpu=2, trials=6)
    with study:
        study.run()
        trials = study.trials()
    refused = [t for t in trials if t.reason == "memory"]
    assert refused and all("GPU memory" in (t.error or "") for t in refused)
    assert all(t.status == "done" for t in trials if t.reason != "memory")
