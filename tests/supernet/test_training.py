"""Progressive shrinking: a tiny supernet trains, reports every phase's exits, resumes
where it stopped (also after SIGKILL), and refuses bad input before writing anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from epnas.cli import main
from epnas.data import Dataset
from epnas.supernet import PHASES, SupernetTraining, load_supernet
from epnas.supernet.training import CHECKPOINT_FILE, REPORT_FILE
from tests.supernet.conftest import TINY, subset

OPTIONS = {"epochs_per_phase": (3, 1, 1, 1), "batch_size": 32, "subnets": 1,
           "calibration_batches": 1}


def _training(out: Path, data: Dataset) -> SupernetTraining:
    return SupernetTraining(out, data, space_options=TINY, options=OPTIONS, device="cpu")


@pytest.fixture(scope="module")
def small(digits: Dataset) -> Dataset:
    return subset(digits, 128, 64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small: Dataset) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trained")
    _training(out, small).run()
    return out


def test_every_phase_trains_and_reports_each_exit(trained: Path) -> None:
    report = json.loads((trained / REPORT_FILE).read_text())
    assert [p["phase"] for p in report["phases"]] == list(PHASES)
    for phase in report["phases"]:
        for which in ("largest", "smallest"):
            assert len(phase[which]) == 2 and all(0 <= a <= 1 for a in phase[which])
    largest = [r["loss"] for r in report["history"] if r["phase"] == "largest"]
    assert largest[-1] < largest[0]  # the loss falls
    smallest = report["phases"][-1]["smallest_genome"]
    assert smallest["resolution"] == 6
    assert smallest["stages"] == [[{"kernel": 3, "expand": 1}]] * 2
    supernet, meta = load_supernet(trained)
    assert meta["dataset"] == "digits" and meta["num_classes"] == 10
    assert len(supernet.stages) == 2


def test_an_interrupted_training_continues_where_it_stopped(
        tmp_path: Path, small: Dataset, trained: Path) -> None:
    class Stop(Exception):
        pass

    def stop_after_two(record: dict) -> None:
        if record["phase"] == "largest" and record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        _training(tmp_path, small).run(stop_after_two)
    again = _training(tmp_path, small)
    assert again.done_epochs() == 2 and not again.finished
    seen = []
    again.run(lambda record: seen.append((record["phase"], record["epoch"])))
    assert seen == [("largest", 3), ("kernel", 1), ("depth", 1), ("expand", 1)]
    # it continued (same random streams, same state), so it ends where one run ends
    resumed = torch.load(tmp_path / "supernet.pt", weights_only=True)
    whole = torch.load(trained / "supernet.pt", weights_only=True)
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    assert _training(tmp_path, small).finished


def test_other_settings_in_the_same_directory_are_refused(trained: Path, small: Dataset) -> None:
    from epnas.errors import EpnasError

    with pytest.raises(EpnasError, match="other settings"):
        SupernetTraining(trained, small, space_options=TINY,
                         options={**OPTIONS, "lr": 0.5}, device="cpu")


def test_a_directory_in_training_is_refused_to_a_second_process(
        tmp_path: Path, small: Dataset) -> None:
    from epnas.errors import EpnasError
    from epnas.store import RunLock

    held = RunLock(tmp_path)  # what a live `epnas supernet train --out DIR` holds
    try:
        with pytest.raises(EpnasError, match=f"in use by process {os.getpid()}"):
            _training(tmp_path, small).run()
        assert not (tmp_path / CHECKPOINT_FILE).exists()
    finally:
        held.release()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "unknown data set 'nope'"),
    (["--opt", "subnets=-1"], "supernet options: subnets"),
    (["--space-opt", "kernels=4,6"], "space options: kernels"),
    (["--space", "layerwise"], "multistage space only"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    out = tmp_path / "out"
    assert main(["supernet", "train", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow  # two CLI processes training on digits: about 20 s on a loaded machine
def test_killed_with_sigkill_and_resumed_by_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "sn"
    space = [f"--space-opt={k}={','.join(map(str, v))}" for k, v in TINY.items()
             if isinstance(v, tuple)] + [f"--space-opt=stages={TINY['stages']}",
                                         f"--space-opt=stem_channels={TINY['stem_channels']}"]
    command = [sys.executable, "-m", "epnas", "supernet", "train", "--dataset", "digits",
               "--out", str(out), *space, "--epochs-per-phase", "3,1,1,1", "--opt",
               "batch_size=64", "--opt", "subnets=1", "--device", "cpu", "--plain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_FILE).exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = json.loads((out / REPORT_FILE).read_text())["history"]
    assert 1 <= len(first) < 6
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    history = json.loads((out / REPORT_FILE).read_text())["history"]
    epochs = [(r["phase"], r["epoch"]) for r in history]
    assert epochs == [("largest", 1), ("largest", 2), ("largest", 3), ("kernel", 1),
                      ("depth", 1), ("expand", 1)]
    assert history[:len(first)] == first  # the epochs before the kill were not redone
    assert [p["phase"] for p in json.loads(done.stdout)["phases"]] == list(PHASES)


def test_auto_precision_is_decided_once_and_read_back_from_the_directory(
        tmp_path: Path, small: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from epnas.supernet import training

    monkeypatch.setattr(training, "decide_precision", lambda device: ("fp32", "test"))
    options = {**OPTIONS, "epochs_per_phase": (1, 0, 0, 0), "precision": "auto"}
    first = SupernetTraining(tmp_path, small, space_options=TINY, options=options,
                             device="cpu")
    first.run()
    assert json.loads((tmp_path / "supernet.json").read_text())["options"]["precision"] \
        == "fp32"
    # another machine or user would measure otherwise: the directory's decision stands
    monkeypatch.setattr(training, "decide_precision", lambda device: ("bf16", "test"))
    again = SupernetTraining(tmp_path, small, space_options=TINY, options=options,
                             device="cpu")
    assert again.options.precision == "fp32"
    assert again.finished  # the phases of 0 epochs after the last epoch count as done


@pytest.mark.parametrize(("speedup", "expected"), [(1.0, "fp32"), (2.0, "bf16")])
def test_bf16_on_a_cpu_is_kept_only_where_this_supernet_trains_faster_in_it(
        tmp_path: Path, small: Dataset, monkeypatch: pytest.MonkeyPatch, speedup: float,
        expected: str) -> None:
    from epnas.supernet import training

    monkeypatch.setattr(training, "decide_precision", lambda device: ("bf16", "test"))
    timed = []

    def measured(model: torch.nn.Module, example: torch.Tensor) -> float:
        timed.append((model, tuple(example.shape)))
        return speedup

    monkeypatch.setattr(training, "model_bf16_speedup", measured)
    options = {**OPTIONS, "precision": "auto"}
    made = SupernetTraining(tmp_path, small, space_options=TINY, options=options,
                            device="cpu")
    assert made.options.precision == expected
    side = made.supernet.options.resolutions[-1]
    assert timed == [(made.supernet, (32, small.input_shape[0], side, side))]


def test_timing_a_model_in_both_precisions_leaves_it_as_it_was() -> None:
    from epnas.train.trainer import model_bf16_speedup

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model_bf16_speedup(model, torch.randn(2, 1, 8, 8), pairs=1) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
