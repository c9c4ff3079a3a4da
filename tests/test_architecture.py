"""The package's import shape (DESIGN.md, "Layout"): the import-linter contracts of
pyproject.toml, no import circle between any two modules, and light imports where a
plug-in author starts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def contract_ids() -> list[str]:
    """The ids of the contracts in pyproject.toml's ``[tool.importlinter]``."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.findall(r'^id = "([^"]+)"', text.partition("[tool.importlinter]")[2], re.M)


def test_every_contract_has_an_id() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert len(contract_ids()) == text.count("[[tool.importlinter.contracts]]") > 0


@pytest.mark.parametrize("contract", contract_ids())
def test_import_contract_is_kept(contract: str) -> None:
    lint = (shutil.which("lint-imports", path=str(Path(sys.executable).parent))
            or shutil.which("lint-imports"))
    assert lint is not None, "import-linter is not installed: pip install -e '.[test]'"
    result = subprocess.run([lint, "--no-cache", "--contract", contract], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    broken = [line for line in result.stdout.splitlines() if line.endswith(" BROKEN")]
    details = result.stdout.partition("Broken contracts")[2] or result.stdout + result.stderr
    assert result.returncode == 0, f"broken: {'; '.join(broken) or contract}\n{details}"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Every import between epnas's modules, those inside functions included."""
    return grimp.build_graph("epnas")


def test_no_import_circles(graph: grimp.ImportGraph) -> None:
    circles = sorted(f"{a} -> {b} -> ... -> {a}"
                     for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                     if graph.chain_exists(importer=b, imported=a))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_imports_the_public_api_back(graph: grimp.ImportGraph) -> None:
    assert graph.find_modules_that_directly_import("epnas") == set()


def test_importing_the_spaces_loads_neither_the_study_nor_the_executors() -> None:
    code = "import sys, epnas.spaces; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True).stdout.split()
    assert "epnas.spaces" in loaded
    heavy = {"epnas.study", "epnas.executors", "epnas.config", "epnas.store", "epnas.cli"}
    assert heavy.isdisjoint(loaded), sorted(heavy & set(loaded))
