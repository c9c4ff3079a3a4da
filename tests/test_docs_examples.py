"""The docs' from-scratch space and evaluator (docs/examples/): shown verbatim in the docs,
keeping their contracts, and searched with EPNAS, evolution and random search from Python
and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import epnas
from epnas.testing import check_evaluator, check_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = "docs.examples.macro_space:MacroSpace"
EVALUATOR = "docs.examples.digits_evaluator:DigitsEvaluator"
STRATEGIES = ["epnas", "evolution", "random"]
SMALL = {"channels": (8, 16), "max_stages": 3}  # networks that train in a blink


@pytest.mark.parametrize(("page", "module"), [("spaces.md", "macro_space.py"),
                                              ("recipes.md", "digits_evaluator.py")])
def test_the_docs_show_the_example_verbatim(page: str, module: str) -> None:
    code = (ROOT / "docs" / "examples" / module).read_text()
    assert f"```python\n{code}```" in (ROOT / "docs" / page).read_text(), \
        f"docs/{page} must show docs/examples/{module} as it is"


def test_the_space_keeps_the_contract() -> None:
    space = epnas.spaces.get(SPACE)
    assert not any(issubclass(type(space), type(epnas.spaces.get(name)))
                   for name in ("layerwise", "cellwise", "nb201"))
    check_space(space)


def test_the_evaluator_keeps_the_contract() -> None:
    from docs.examples.digits_evaluator import DigitsEvaluator

    check_evaluator(DigitsEvaluator(), epnas.spaces.get(SPACE, **SMALL))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_searched_from_python(strategy: str) -> None:
    study = epnas.Study(space=SPACE, strategy=strategy, evaluator="synthetic", trials=12,
                        out=None)
    summary = study.run()
    assert summary.trials == 12 and summary.best.genome.space == SPACE


def search(tmp_path: Path, *flags: str) -> dict:
    """``epnas search ... --json`` from the repository root (where the examples import)."""
    result = subprocess.run([sys.executable, "-m", "epnas", "search", *flags, "--out",
                             str(tmp_path / "run"), "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_searched_from_the_cli(strategy: str, tmp_path: Path) -> None:
    summary = search(tmp_path, "--space", SPACE, "--strategy", strategy, "--evaluator",
                     "synthetic", "--trials", "12")
    assert summary["trials"] == 12 and summary["best"]["genome"]["space"] == SPACE


def test_the_evaluator_trains_from_python_and_the_cli(tmp_path: Path) -> None:
    study = epnas.Study(space=SPACE, space_options=SMALL, strategy="evolution",
                        evaluator=EVALUATOR, fidelity="1ep", trials=3, out=None)
    assert 0.0 <= study.run().best.metrics["accuracy"] <= 1.0
    summary = search(tmp_path, "--space", SPACE, "--space-opt", "channels=8,16",
                     "--space-opt", "max_stages=3", "--strategy", "random", "--evaluator",
                     EVALUATOR, "--fidelity", "1ep", "--trials", "3")
    assert summary["counts"] == {"done": 3}
    assert "train_seconds" in summary["best"]["metrics"]
