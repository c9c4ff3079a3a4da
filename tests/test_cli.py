"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas.cli import main


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epnas", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"epnas {epnas.__version__}"


def test_spaces_lists_every_space_with_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["spaces", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == epnas.spaces.names()
    layerwise = next(r for r in rows if r["name"] == "layerwise")
    assert layerwise["options"]["channels"] == [16, 32, 64, 96, 128, 256]
    assert main(["spaces"]) == 0
    assert "max_layers" in capsys.readouterr().out


@pytest.mark.parametrize("space", epnas.spaces.names())
def test_sample_json_lines_are_exactly_genome_json(space: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    # in-process (one subprocess per space and command cost ~25 s of the everyday subset)
    capsys.readouterr()
    assert main(["sample", "--space", space, "-n", "3", "--seed", "5", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rng = np.random.default_rng(5)
    expected = [epnas.spaces.get(space).sample(rng).to_json() for _ in range(3)]
    assert lines == expected
    genome_file = tmp_path / "g.json"
    genome_file.write_text(lines[1] + "\n")
    assert main(["show", "--genome", str(genome_file), "--input-shape", "1,28,28",
                 "--json"]) == 0
    shown = capsys.readouterr().out
    data = json.loads(shown)
    genome = epnas.load_genome(lines[1])
    assert data["cost"]["params"] == epnas.cost(genome, (1, 28, 28), 10).params
    annotated = tmp_path / "annotated.json"  # a genome with its cost is still a genome file
    annotated.write_text(shown)
    assert main(["show", "--genome", str(annotated)]) == 0


def test_sample_table_shows_costs(capsys: pytest.CaptureFixture) -> None:
    assert main(["sample", "-n", "2", "--input-shape", "1,8,8", "--space-opt",
                 "max_layers=4", "--space-opt", "channels=8,16"]) == 0
    out = capsys.readouterr().out
    assert "MFLOPs" in out and "params" in out and "intensity" in out


def test_sample_json_to_file(tmp_path: Path) -> None:
    out = tmp_path / "genomes.jsonl"
    assert main(["sample", "--space", "nb201", "-n", "4", "--json", str(out)]) == 0
    assert [epnas.load_genome(line).space for line in out.read_text().splitlines()] == \
        ["nb201"] * 4


@pytest.mark.parametrize(("args", "message"), [
    (["sample", "--space", "nope"], "unknown space 'nope'"),
    (["sample", "--space-opt", "max_layers=0"], "max_layers"),
    (["sample", "--space-opt", "oops"], "expected KEY=VALUE"),
    (["sample", "--space", "nb201", "--depth", "9"], "depth = 9"),
    (["show", "--genome", "/no/such/file.json"], "cannot read genome file"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_genome_file_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "space": "layerwise", "layers": [{"uid": 1, "op": "x", '
                   '"src1": 0}]}')
    result = run("show", "--genome", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr
    assert "layers[1].op" in result.stderr
    debug = run("--debug", "show", "--genome", str(bad))
    assert "Traceback" in debug.stderr


def test_user_space_by_module_and_class(tmp_path: Path) -> None:
    (tmp_path / "myspaces.py").write_text(textwrap.dedent('''
        from epnas.spaces import LayerwiseOptions, LayerwiseSpace

        class SmallOptions(LayerwiseOptions):
            channels: tuple[int, ...] = (8, 12)
            max_layers: int = 3

        class Small(LayerwiseSpace):
            """Three layers at most."""
            Options = SmallOptions
    '''))
    env = {"PYTHONPATH": str(tmp_path)}
    result = run("sample", "--space", "myspaces:Small", "-n", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    genome_file = tmp_path / "g.json"
    genome_file.write_text(result.stdout)
    assert json.loads(result.stdout.splitlines()[0])["space"] == "myspaces:Small"
    assert run("show", "--genome", str(genome_file), env=env).returncode == 0
    missing = run("sample", "--space", "myspaces:Nope", env=env)
    assert missing.returncode == 2 and "has no space 'Nope'" in missing.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("epnas")
    if not script.exists():
        pytest.skip("epnas is not installed as a console script in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0
