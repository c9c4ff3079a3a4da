"""The package as pip installs it (issue 16, item 2): the wheel carries its data (the
NAS-Bench-201 table, the report templates), and the README's commands work from a
non-editable install in a fresh directory."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", str(ROOT), "-w",
                            str(out)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip()[-300:]}")
    return next(out.glob("epnas-*.whl"))


def test_the_wheel_carries_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "epnas/evaluators/data/nb201_cifar10.csv" in names
    assert "epnas/evaluators/data/nb201_cifar10.md" in names  # its source and licence
    assert any(n.startswith("epnas/report/templates/") for n in names)
    table = zipfile.ZipFile(wheel).read("epnas/evaluators/data/nb201_cifar10.csv")
    assert table.startswith(b"arch,") and table.count(b"\n") == 15626


def commands(section: str) -> list[str]:
    """The lines of the first shell block of the README's ``section``."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme.split(f"## {section}", 1)[1], re.S)
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_says_which_commands_need_an_extra() -> None:
    for command in commands("From search to a deployed model") + commands("A short tour"):
        if "--format onnx" in command:  # the install line installs no onnx
            assert "pip install '.[export]'" in command


@pytest.mark.slow
def test_the_readme_commands_run_from_a_non_editable_install(wheel: Path, tmp_path: Path) -> None:
    # A venv of its own holding the wheel; the dependencies (torch, ...) come from this
    # environment's site-packages, added as a plain path: its .pth files (the editable
    # epnas among them) are not run, so `epnas` is the installed wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "-q", str(wheel)], check=True, timeout=600)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("EPNAS_NB201_CSV", None)
    env.pop("PYTHONPATH", None)
    where = subprocess.run([python, "-c", "import epnas; print(epnas.__file__)"], cwd=home,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where  # the installed copy, not the checkout
    # shortened where it searches or trains: what is checked is that each command works
    # as written from the install; tests/test_walkthrough.py checks what they produce
    shorter = {"--trials": {"24": "4", "60": "4", "300": "30", "100": "6"},
               "--epochs": {"10": "1"}}
    for command in commands("From search to a deployed model") + commands("A short tour"):
        argv = shlex.split(command, comments=True)
        target = None
        if ">" in argv:  # a redirection: the file the next command reads
            argv, target = argv[:argv.index(">")], argv[argv.index(">") + 1]
        argv = [shorter.get(argv[i - 1], {}).get(a, a) for i, a in enumerate(argv)]
        done = subprocess.run([venv / "bin" / "epnas", *argv[1:]], cwd=home, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if target is not None:
            Path(home, target).write_text(done.stdout)
