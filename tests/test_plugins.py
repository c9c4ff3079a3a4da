"""Plug-ins by entry point: a package's spaces, strategies and evaluators are found by
name (groups ``epnas.spaces``, ``epnas.strategies``, ``epnas.evaluators``), imported only
when used, and listed with where they came from."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas import EpnasError, evaluators, strategies
from epnas.evaluators import EVALUATORS
from epnas.spaces.registry import SPACES
from epnas.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
DIST, VERSION, PACKAGE = "epnas-demo-plugin", "0.1", "epnas_demo_plugin"
ENTRY_POINTS = {
    "epnas.spaces": {"demo-macro": f"{PACKAGE}.spaces:MacroSpace",
                     "demo-broken": f"{PACKAGE}.missing:Nothing"},
    "epnas.strategies": {"demo-random": f"{PACKAGE}.more:DemoRandom",
                         "random": f"{PACKAGE}.more:DemoRandom"},  # a built-in name
    "epnas.evaluators": {"demo-synthetic": f"{PACKAGE}.more:DemoSynthetic"},
}
MORE = '''
from epnas.evaluators import SyntheticEvaluator
from epnas.strategies import RandomSearch


class DemoRandom(RandomSearch):
    """Random search, published by a plug-in."""


class DemoSynthetic(SyntheticEvaluator):
    """The synthetic evaluator, published by a plug-in."""
'''


def write_package(root: Path) -> None:
    """The plug-in's package: the docs' macro space and two trivial subclasses."""
    package = root / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A demo epnas plug-in."""\n')
    (package / "spaces.py").write_text((ROOT / "docs/examples/macro_space.py").read_text())
    (package / "more.py").write_text(MORE)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plug-in installed as importlib.metadata sees it: a dist-info directory with its
    entry_points.txt on sys.path (what pip leaves in site-packages)."""
    write_package(tmp_path)
    info = tmp_path / f"{PACKAGE}-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
        for group, points in ENTRY_POINTS.items()))
    registries = (SPACES, STRATEGIES, EVALUATORS)
    saved = [r.snapshot() for r in registries]
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for registry, snapshot in zip(registries, saved):
        registry.restore(snapshot)
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def test_names_are_listed_with_their_origin_before_import(plugin: Path) -> None:
    assert "demo-macro" in epnas.spaces.names()
    assert f"{PACKAGE}.spaces" not in sys.modules, "listing must not import the plug-in"
    origin = f"entry point ({DIST} {VERSION})"
    assert epnas.spaces.origins()["demo-macro"] == origin
    assert epnas.spaces.origins()["layerwise"] == "built-in"
    assert STRATEGIES.origins()["demo-random"] == origin
    assert EVALUATORS.origins()["demo-synthetic"] == origin


def test_a_plugin_space_works_by_name(plugin: Path) -> None:
    space = epnas.spaces.get("demo-macro", max_stages=3)
    genome = space.sample(np.random.default_rng(0))
    assert genome.space == "demo-macro"
    assert epnas.load_genome(genome.to_json()) == genome
    assert epnas.cost(genome, (1, 8, 8)).params > 0
    assert SPACES.resolve(f"{PACKAGE}.spaces:MacroSpace")[0] == "demo-macro"


def test_plugins_search_together(plugin: Path) -> None:
    study = epnas.Study(space="demo-macro", strategy="demo-random", evaluator="demo-synthetic",
                        trials=4, out=None)
    assert study.run().trials == 4
    assert type(strategies.get("demo-random", "demo-macro")).__name__ == "DemoRandom"
    assert "demo-synthetic" in evaluators.names()


def test_a_broken_plugin_is_named(plugin: Path) -> None:
    with pytest.raises(EpnasError, match=rf"cannot load space 'demo-broken' .* from entry "
                                         rf"point \({DIST} {VERSION}\)"):
        epnas.spaces.get("demo-broken")


def test_a_registered_name_wins_and_unknown_names_list_plugins(plugin: Path) -> None:
    assert STRATEGIES.resolve("random")[1] is strategies.RandomSearch
    assert STRATEGIES.origins()["random"] == "built-in"
    with pytest.raises(EpnasError, match=r"known: .*demo-macro"):
        epnas.spaces.get("no-such-space")


def test_the_cli_lists_and_searches_plugins(plugin: Path, capsys: pytest.CaptureFixture) -> None:
    from epnas.cli import main

    origin = f"entry point ({DIST} {VERSION})"
    for command, name in (("spaces", "demo-macro"), ("strategies", "demo-random"),
                          ("evaluators", "demo-synthetic")):
        assert main([command, "--json"]) == 0
        rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
        assert rows[name]["origin"] == origin and rows[name]["description"]
        assert {r["origin"] for n, r in rows.items() if not n.startswith("demo-")} == \
            {"built-in"}
    assert main(["spaces", "--json"]) == 0  # a broken plug-in is listed, not fatal
    broken = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if "demo-broken" in line]
    assert "cannot be loaded" in broken[0]["description"]
    assert main(["search", "--space", "demo-macro", "--strategy", "demo-random",
                 "--evaluator", "demo-synthetic", "--trials", "3", "--out",
                 str(plugin / "run"), "--quiet"]) == 0


def test_gone_when_off_the_path(plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "demo-macro" in epnas.spaces.names()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(plugin)])
    assert "demo-macro" not in epnas.spaces.names()


@pytest.mark.slow
def test_a_pip_installed_plugin_searches_from_the_cli(tmp_path: Path) -> None:
    """A real package, installed with pip into this environment, then uninstalled."""
    source = tmp_path / "source"
    write_package(source)
    points = "".join(f'\n[project.entry-points."{group}"]\n'
                     + "".join(f'"{name}" = "{value}"\n' for name, value in entries.items())
                     for group, entries in ENTRY_POINTS.items())
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = '
        f'"setuptools.build_meta"\n\n[project]\nname = "{DIST}"\nversion = "{VERSION}"\n'
        + points + f'\n[tool.setuptools]\npackages = ["{PACKAGE}"]\n')
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(source)],
                   check=True, capture_output=True, timeout=300)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "epnas", "search", "--space", "demo-macro", "--trials", "3",
             "--out", str(tmp_path / "run"), "--json"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["trials"] == 3 and summary["best"]["genome"]["space"] == "demo-macro"
    finally:
        subprocess.run([*pip, "uninstall", "-y", DIST], check=True, capture_output=True,
                       timeout=300)
