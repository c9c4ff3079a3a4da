"""Every Python example in the README and docs/ runs as written."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import types
from pathlib import Path

import pytest

import epnas
from epnas import cli, reference
from epnas.evaluators import EVALUATORS
from epnas.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for i, code in enumerate(BLOCK.findall(path.read_text())):
            found.append((f"{path.name}#{i + 1}", code))
    return found


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_doc_example_runs(where: str, code: str) -> None:
    registries = (epnas.spaces.registry.SPACES, STRATEGIES, EVALUATORS)
    saved = [r.snapshot() for r in registries]
    # run as a module, so that dataclasses and pydantic find the example's namespace
    module = sys.modules["docs_example"] = types.ModuleType("docs_example")
    try:
        exec(compile(code, where, "exec"), module.__dict__)
    except epnas.EpnasError as exc:
        if "no NAS-Bench-201 table" not in str(exc):
            raise
        pytest.skip(f"the example needs the NAS-Bench-201 CSV: {exc}")
    finally:  # examples may register spaces and more; keep the registries as they were
        del sys.modules["docs_example"]
        for registry, snapshot in zip(registries, saved):
            registry.restore(snapshot)


def test_docs_have_examples() -> None:
    assert len(examples()) >= 3


SHELL = re.compile(r"```bash\n(.*?)```", re.S)


def shell_commands() -> list[tuple[str, list[str]]]:
    """Every ``epnas ...`` command of the shell blocks, as argv (redirections cut off)."""
    found = []
    for path in DOCS:
        for block in SHELL.findall(path.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                code = line.split("  #")[0].strip()
                for part in re.split(r"&&|\|\||;|\|", code):
                    argv = shlex.split(part)
                    if argv[:1] != ["epnas"]:
                        continue
                    cut = [i for i, a in enumerate(argv) if a.startswith((">", "2>"))]
                    found.append((path.name, argv[1:cut[0]] if cut else argv[1:]))
    return found


@pytest.mark.parametrize(("where", "argv"), shell_commands(),
                         ids=[f"{w}:{' '.join(a[:3])}" for w, a in shell_commands()])
def test_doc_shell_commands_parse(where: str, argv: list[str]) -> None:
    """The commands the docs show exist with those flags (running them is the CLI tests')."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `epnas {' '.join(argv)}` does not parse (exit {exc.code}): "
                    f"{errors.getvalue().strip()}")


def test_reference_is_current() -> None:
    current = (ROOT / "docs" / "reference.md").read_text()
    assert current == reference.render(), \
        "docs/reference.md is stale: run python -m epnas.reference docs/reference.md"
