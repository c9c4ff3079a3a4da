"""Storage errors beyond the search: ``retrain``, ``report`` and ``export`` writing into
read-only storage end with the search's one line ``storage error: PATH: CAUSE`` (exit 2),
not a traceback."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from epnas.cli import main
from epnas.study import Study
from tests.study.test_storage import remount, tmpfs


@contextlib.contextmanager
def read_only_place(path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A directory to fill, and the function that then makes it read-only: a read-only
    tmpfs for root (whom permissions do not stop), permissions for anyone else."""
    if os.geteuid() == 0:
        with tmpfs(path, "16M") as fs:
            yield fs, lambda: remount(fs, "ro")
        return
    path.mkdir()

    def freeze() -> None:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

    try:
        yield path, freeze
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow  # a report, a TorchScript trace and digits loaded: about 7 s
def test_retrain_report_and_export_on_read_only_storage_say_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path / "cache"))
    with read_only_place(tmp_path / "fs") as (fs, freeze):
        run = fs / "run"
        with Study(strategy="random", evaluator="synthetic", trials=2, out=run) as study:
            study.run()
        freeze()
        cases = [
            (["report", str(run)], run / "report"),
            (["report", str(run), "--out", str(fs / "elsewhere")], fs / "elsewhere"),
            (["export", str(run), "--format", "json", "--out", str(fs / "g.json")],
             fs / "g.json"),
            (["export", str(run), "--format", "pytorch", "--out", str(fs / "net")], fs / "net"),
            (["export", str(run), "--format", "torchscript", "--out", str(fs / "net.pt")],
             fs / "net.pt"),
            (["retrain", str(run), "--dataset", "digits", "--epochs", "1"], run / "final"),
        ]
        capsys.readouterr()
        for args, path in cases:
            assert main(args) == 2, args
            err = capsys.readouterr().err
            assert err.startswith(f"epnas: error: storage error: {path}"), (args, err)
            assert err.count("\n") == 1 and "Traceback" not in err
        assert "write it elsewhere with --out" in main_err(["report", str(run)], capsys)


def main_err(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    main(args)
    return capsys.readouterr().err
