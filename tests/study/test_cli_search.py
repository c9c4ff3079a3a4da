"""``epnas search``, ``resume`` and ``status`` as a user runs them, and their bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from epnas.cli import main
from epnas.config import StudyConfig, default_evaluator
from epnas.progress import LiveReporter
from epnas.store import SCHEMA_VERSION
from epnas.study import Study

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--strategy", "random", "--evaluator", "synthetic", "--quiet"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epnas", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_search_status_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", *FAST, "--trials", "6", "--max-params", "100k", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("\n[") == 6 and "best feasible architecture" in text
    assert f"run: {out}" in text and "acc " in text and "params " in text
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["trials"] == 6 and status["running_pid"] is None
    assert status["best"]["feasible"] and len(status["top"]) <= 6
    assert main(["status", str(out)]) == 0
    assert "top 10 by reward" in capsys.readouterr().out
    # the same command with a larger budget extends the run; so does `epnas resume`
    assert main(["search", *FAST, "--trials", "8", "--max-params", "100k", "--out",
                 str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 8
    assert main(["resume", str(out), "--trials", "10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 10 and summary["stop_reason"] == "trials"


def test_defaults_of_a_search_with_no_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["search", "--print-config"]) == 0
    config = StudyConfig.parse(yaml.safe_load(capsys.readouterr().out))
    assert (config.space, config.strategy, config.trials) == ("layerwise", "epnas", 100)
    assert config.evaluator == default_evaluator("layerwise")
    assert config.out.startswith("runs/layerwise-epnas-")


@pytest.mark.slow
def test_search_with_no_options_runs_to_completion(tmp_path: Path) -> None:
    """The README's first command (a real search once the training evaluator exists)."""
    # the timeout is a hang guard: about 3 minutes on 2 quiet cores, and 23 once measured
    # with a benchmark holding one of them
    result = subprocess.run([sys.executable, "-m", "epnas", "search", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=2700,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "best feasible architecture" in result.stdout
    assert re.search(r"\d+ trials \(.*\) in \d+:\d\d", result.stdout), result.stdout
    [run_dir] = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("layerwise-epnas-") and (run_dir / "trials.csv").is_file()


def test_default_out_and_no_feasible_model(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["search", *FAST, "--trials", "3", "--max-params", "10"]) == 0
    text = capsys.readouterr().out
    assert "no feasible architecture found" in text and "params +" in text
    [run_dir] = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("layerwise-random-")


def test_config_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(textwrap.dedent("""
        space: layerwise
        space-options: {max_layers: 6}
        strategy: random
        constraints: ["params::50k"]
        trials: 40
        time: 1h30m
        seed: 3
    """))
    assert main(["search", "--config", str(config), "--trials", "5", "--space-opt",
                 "channels=8,16", "--out", "x", "--no-elastic-threads", "--print-config"]) == 0
    effective = StudyConfig.parse(yaml.safe_load(capsys.readouterr().out))
    assert effective.trials == 5 and effective.time == 5400 and effective.seed == 3
    assert effective.elastic_threads is False  # the default is True
    assert effective.space_options == {"max_layers": 6, "channels": [8, 16]}
    assert effective.constraints == ["params::50000:0.9"]
    assert effective.evaluator == "training" and effective.out == "x"
    assert not (tmp_path / "x").exists()


def test_the_config_is_parsed_once_on_its_way_to_the_study(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy spec with +filter once cost three validations (the CLI's, the CLI's again
    with the filter's limits, the Study's)."""
    parses = []
    validate = StudyConfig.__init__

    def counted(self: StudyConfig, **data: object) -> None:
        parses.append(data.get("strategy"))
        validate(self, **data)

    monkeypatch.setattr(StudyConfig, "__init__", counted)
    out = str(tmp_path / "run")
    assert main(["search", *FAST, "--strategy", "evolution[population=4]+filter",
                 "--max-params", "100k", "--trials", "2", "--out", out]) == 0
    assert parses == ["evolution[population=4]+filter"]
    parses.clear()
    capsys.readouterr()
    assert main(["resume", out, "--trials", "3", "--json"]) == 0
    # the resumed config, then the Study's check of the config stored in the run directory
    assert parses == ["evolution", "evolution"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["filters"] == [
        "max-params=100000"]


def test_a_strategy_spec_works_in_the_python_api() -> None:
    with Study(strategy="evolution[population=4]+filter", evaluator="synthetic", trials=2,
               max_params="100k") as study:
        assert study.config.strategy == "evolution"
        assert study.config.filters == ["max-params=100000"]
        assert study.config.strategy_options == {"population": 4}


def bad(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("epnas: error: ")
    return err


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("trails: 10\n", "unknown setting 'trails' (allowed: space, space_options"),
    ("trials: many\n", "trials: Input should be a valid integer"),
    ("workers: 0\n", "workers: Input should be greater than or equal to 1"),
    ("constraints: ['params:5M:1M']\n", "lower bound 5e+06 is above upper bound 1e+06"),
    ("time: soon\n", "cannot read duration 'soon'"),
    ("space: [unclosed\n", "line 2"),
    ("- a list\n", "must hold a mapping of settings"),
    ("strategy: nope\n", "unknown strategy 'nope'; known:"),
    ("space: nope\n", "unknown space 'nope'"),
    ("evaluator: nope\n", "unknown evaluator 'nope'"),
])
def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture, yaml_text: str,
                         message: str) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "run"
    assert message in bad(["search", "--config", str(config), "--out", str(out)], capsys)
    assert not out.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--constraint", "flops:20M:1M"], "lower bound 2e+07 is above upper bound 1e+06"),
    (["--constraint", "flops"], "expected METRIC:LOW:HIGH[:PENALTY]"),
    (["--max-params", "lots"], "cannot read size 'lots'"),
    (["--time", "0"], "duration '0' must be positive"),
    (["--space-opt", "max_layers=0"], "max_layers"),
    (["--strategy-opt", "bogus=1"], "bogus"),
    (["--evaluator-opt", "bogus=1"], "evaluator 'synthetic' options"),
    (["--dataset", "digits"], "takes no 'dataset'"),
    (["--config", "/no/such.yaml"], "cannot read config file /no/such.yaml"),
    (["--preset", "tabular"], "strategy 'random' has no preset 'tabular'; its presets: none"),
    (["--evaluator", "training", "--fidelity", "c=2"], "fidelity 'c=2': c: Input should be"),
    (["--evaluator", "training", "--fidelity", "e=5,x=1"], "unknown key 'x'"),
    (["--space", "nb201", "--evaluator", "tabular", "--fidelity", "50ep"],
     "has no fidelity '50ep'; use one of 200ep, 12ep"),
    # checked against the evaluator before the run directory exists (issue 16)
    (["--constraint", "foo::1"], "constraint on 'foo': the synthetic evaluator does not "
                                 "report it; its metrics: accuracy, bytes, flops"),
    (["--constraint", "foo::1", "--workers", "2"], "constraint on 'foo'"),
    (["--evaluator", "training", "--constraint", "latency::2"],
     "it measures latency with the option latency=true"),
    (["--evaluator", "training", "--strategy-opt", "fidelity=bogus"],
     "strategy 'random' asks for fidelity 'bogus': unknown fidelity item 'bogus'"),
    (["--space", "nb201", "--evaluator", "tabular", "--strategy", "econas", "--strategy-opt",
      "levels=12ep,50ep"], "strategy 'econas' asks for fidelity '50ep'"),
])
def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                   message: str) -> None:
    out = tmp_path / "run"
    assert message in bad(["search", *FAST, *flags, "--out", str(out)], capsys)
    assert not out.exists()


TWO_LEVELS = '''
from epnas.evaluators.synthetic import SyntheticEvaluator


class TwoLevels(SyntheticEvaluator):
    """A user's evaluator that knows two fidelities."""

    fidelities = ("low", "high")
    default_fidelity = "high"
'''


@pytest.mark.parametrize(("flags", "message"), [
    # EcoNAS's default levels: NAS-Bench-201's table columns on nb201 ...
    (["--space", "nb201", "--evaluator", "training"],
     "strategy 'econas' asks for fidelity '12ep': unknown fidelity item '12ep'"),
    # ... and a reduced training setting elsewhere, which a user's evaluator may not know
    (["--evaluator", "two_levels:TwoLevels"],
     "strategy 'econas' asks for fidelity 'c=0.25,r=0.5,s=0.5,e=5': TwoLevels has no "
     "fidelity 'c=0.25,r=0.5,s=0.5,e=5'; use one of low, high"),
    (["--evaluator", "two_levels:TwoLevels", "--strategy-opt", "levels=low,medium"],
     "strategy 'econas' asks for fidelity 'medium'"),
    (["--evaluator", "two_levels:TwoLevels", "--strategy", "evolution[fidelity=top]"],
     "strategy 'evolution' asks for fidelity 'top'"),
])
def test_every_fidelity_a_strategy_asks_for_is_checked_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        flags: list[str], message: str) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "two_levels.py").write_text(TWO_LEVELS)
    monkeypatch.syspath_prepend(str(plugins))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    err = bad(["search", "--strategy", "econas", "--trials", "4", "--quiet", *flags], capsys)
    assert message in err and "--strategy-opt" in err
    assert list(work.iterdir()) == []  # not even the default runs/ directory
    # the levels it has run
    assert main(["search", "--strategy", "econas", "--evaluator", "two_levels:TwoLevels",
                 "--strategy-opt", "levels=low,high", "--trials", "4", "--quiet", "--json",
                 "--out", "run"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 4


def test_an_unknown_constraint_metric_fails_at_once_and_leaves_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was reported after a trial had trained, in a run directory that then refused
    the corrected command without --force-new."""
    monkeypatch.chdir(tmp_path)
    err = bad(["search", *FAST, "--trials", "2", "--constraint", "foo::1"], capsys)
    assert "constraint on 'foo'" in err
    assert list(tmp_path.iterdir()) == []  # not even the default runs/ directory
    out = tmp_path / "run"
    bad(["search", *FAST, "--trials", "2", "--constraint", "foo::1", "--out", str(out)], capsys)
    assert not out.exists()
    assert main(["search", *FAST, "--trials", "2", "--constraint", "params::1M", "--out",
                 str(out)]) == 0


def test_missing_dataset_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", *FAST, "--trials", "2", "--out", str(out)]) == 0  # to keep intact
    capsys.readouterr()
    before = snapshot(out)
    for target in (tmp_path / "new", out):
        err = bad(["search", "--dataset", "fashion-mnist", "--data", str(tmp_path / "nope"),
                   "--out", str(target)], capsys)
        assert "fashion-mnist: expected train-images-idx3-ubyte[.gz]" in err
        assert "pass --data DIR" in err
    assert not (tmp_path / "new").exists() and snapshot(out) == before


def test_unwritable_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = bad(["search", *FAST, "--out", str(blocker / "run")], capsys)
    assert "cannot create run directory" in err and "choose another --out" in err


def test_existing_run_is_left_unchanged_by_refusals(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", *FAST, "--trials", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    err = bad(["search", *FAST, "--trials", "3", "--seed", "1", "--out", str(out)], capsys)
    assert "another configuration (seed: 1 vs 0" in err and "--force-new" in err
    assert snapshot(out) == before

    db = sqlite3.connect(out / "study.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    newer = snapshot(out)
    assert "written by a newer epnas" in bad(["search", *FAST, "--out", str(out)], capsys)
    assert "written by a newer epnas" in bad(["status", str(out)], capsys)
    assert snapshot(out) == newer

    assert main(["search", *FAST, "--trials", "2", "--seed", "1", "--out", str(out),
                 "--force-new"]) == 0
    assert len(list(out.glob("replaced-*/study.db"))) == 1


def test_resume_and_status_of_a_directory_without_a_run(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert "holds no study" in bad(["resume", str(tmp_path)], capsys)
    assert "holds no study" in bad(["status", str(tmp_path)], capsys)


def test_second_search_on_a_locked_run_names_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-m", "epnas", "search", "--strategy", "random", "--evaluator",
         "tests.study.helpers:Sleepy", "--evaluator-opt", "sleep=0.5", "--trials", "60",
         "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("epnas: searching")
        result = run("search", "--strategy", "random", "--evaluator",
                     "tests.study.helpers:Sleepy", "--evaluator-opt", "sleep=0.5",
                     "--trials", "60", "--out", str(out))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"in use by process {holder.pid}" in result.stderr
        assert result.stderr.count("\n") == 1
        status = run("status", str(out))
        assert status.returncode == 0 and f"running (pid {holder.pid})" in status.stdout
    finally:
        holder.kill()
        holder.wait()


def test_failure_streak_exits_1_with_a_diagnosis(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    code = main(["search", "--strategy", "random", "--evaluator", "tests.study.helpers:Sleepy",
                 "--evaluator-opt", "raise_every=1", "--max-consecutive-failures", "2",
                 "--trials", "10", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "3 trials in a row failed" in captured.err
    assert "no trial finished with a result" in captured.out


def test_live_display_renders_trials() -> None:
    study = Study(strategy="random", evaluator="synthetic", trials=3, max_params="100k")
    stream = io.StringIO()
    reporter = LiveReporter(study.config, study.summary(), stream, "runs/x")
    with reporter:
        study.progress = reporter.trial
        study.run()
    text = stream.getvalue()
    assert "trials 3/3" in text and "best feasible #" in text and "runs/x" in text


def test_preset_with_overrides(capsys: pytest.CaptureFixture) -> None:
    args = ["search", "--strategy", "epnas", "--preset", "tabular", "--strategy-opt",
            "top_k=2", "--space", "nb201", "--evaluator", "synthetic", "--trials", "3"]
    assert main([*args, "--print-config"]) == 0
    assert "preset: tabular" in capsys.readouterr().out
    study = Study(strategy="epnas", preset="tabular", strategy_options={"top_k": 2},
                  space="nb201", evaluator="synthetic", trials=3)
    assert study.strategy.options.steps == 1 and study.strategy.options.top_k == 2


def test_max_memory_constrains_the_estimated_training_memory(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", "--evaluator", "synthetic", "--strategy", "random", "--trials", "4",
                 "--max-memory", "100k", "--out", str(out), "--quiet"]) == 0
    assert "no feasible architecture found" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4 and {row["feasible"] for row in rows} == {"0"}
    assert all(float(row["memory"]) > 100e3 for row in rows)


def test_workers_far_above_the_machine_are_capped(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """`--workers 1000` once started a process a second until the machine ran out of
    memory; now the run uses what the cores, budget and memory allow, and says so."""
    from epnas.executors import limit_workers

    out = tmp_path / "run"
    cap = limit_workers(1000, trials=4).workers
    assert main(["search", *FAST, "--trials", "4", "--workers", "1000", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert f"epnas: using {cap} workers instead of 1000: " in text
    assert text.count("instead of 1000") == 1
    assert f"{cap} worker" in text.splitlines()[1]  # the header names what is used
    executor = json.loads((out / "env.json").read_text())["executor"]
    assert executor is None or executor["workers"] == cap
    db = sqlite3.connect(out / "study.db")
    workers = {w for (w,) in db.execute("SELECT worker FROM trials")}
    db.close()
    # worker names are w<n>:<pid>, n counting the processes the pool started
    assert len(workers) <= cap
    assert all(int(w[1:].split(":")[0]) <= cap for w in workers if w.startswith("w"))
    assert yaml.safe_load((out / "config.yaml").read_text())["workers"] == cap
    # resume with a new --workers goes through the same limit
    assert main(["resume", str(out), "--trials", "6", "--workers", "500", "--quiet"]) == 0
    assert f"using {limit_workers(500, trials=6).workers} workers instead of 500: " in \
        capsys.readouterr().out


def test_the_header_shows_the_budget_a_strategy_schedule_allows(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The header once announced the trial budget (100) of a run whose strategy was done
    at 48."""
    out = tmp_path / "run"
    assert main(["search", "--strategy", "tests.study.helpers:Finite", "--evaluator",
                 "synthetic", "--quiet", "--trials", "10", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(4 trials: the tests.study.helpers:Finite strategy's own schedule, 4 asks, ends " \
           "before the budget of 10; 1 worker)" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert "stopped by strategy" in "\n".join(lines)


def test_after_an_interruption_counters_count_finished_trials_only(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Trial 3 is interrupted (Ctrl-C) while it trains: it was counted as done by the stop
    message and again when the resumed run finished it."""
    out = tmp_path / "run"
    code = main(["search", *FAST, "--evaluator", "tests.study.helpers:Sleepy",
                 "--evaluator-opt", "interrupt_at=3", "--trials", "5", "--out", str(out)])
    assert code == 130
    text = capsys.readouterr().out
    assert [line.split()[0] for line in text.splitlines()[1:3]] == ["[1/5]", "[2/5]"]
    assert "stopped after 2 finished trials (1 unfinished run again on resume)" in text
    # the evaluator interrupts again at its 3rd evaluation: a budget of 4 needs only 2
    assert main(["resume", str(out), "--trials", "4", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["[3/4]", "#3"], ["[4/4]", "#4"]]


def write_pngs(directory: Path, count: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = [directory / f"img{i}.png" for i in range(count)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, size=(10, 10), dtype=np.uint8)).save(path)
    return paths


@pytest.mark.parametrize("fault", ["corrupt", "truncated", "one-class"])
def test_bad_image_folders_stop_the_run_before_its_first_trial(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        fault: str) -> None:
    """One corrupt PNG once failed every trial with exit code 0, and one class scored
    100 % everywhere; now the search stops at once and writes nothing."""
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))
    images, out = tmp_path / "images", tmp_path / "run"
    write_pngs(images / "cat", 6)
    if fault == "one-class":
        message = f"folder: {images} holds one class directory (cat); a classifier needs " \
                  "at least two classes"
    else:
        bad_png = write_pngs(images / "dog", 6)[3]
        if fault == "corrupt":
            bad_png.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            bad_png.write_bytes(bad_png.read_bytes()[:40])
        message = f"folder: cannot read image {bad_png}: "
    err = bad(["search", "--strategy", "random", "--dataset", "folder", "--data", str(images),
               "--trials", "2", "--quiet", "--out", str(out)], capsys)
    assert message in err
    assert not out.exists()


def test_an_error_before_the_run_starts_releases_the_run_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from epnas.errors import EpnasError

    def refuse(self: Study) -> tuple[int | None, str | None]:
        raise EpnasError("refused before the first trial")

    args = ["search", "--strategy", "random", "--evaluator", "tests.study.helpers:Sleepy",
            "--trials", "2", "--quiet", "--out", str(tmp_path / "run")]
    monkeypatch.setattr(Study, "trial_budget", refuse)
    assert main(args) == 2
    monkeypatch.undo()
    assert main(args) == 0  # the refused run held no lock: the same process runs it now
