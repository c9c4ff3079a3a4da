"""``epnas report`` end to end on real runs: the files it writes, what the page holds,
and runs with failures, no feasible trial, a table, or still in progress."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from epnas.cli import main
from epnas.report.html import write_report
from epnas.store import NewTrial, Store
from epnas.trial import Candidate

PLOTS = ("progress-trials.png", "progress-time.png", "tradeoff-params.png",
         "tradeoff-flops.png", "episodes.png")


def images_of(page: str) -> list[bytes]:
    import base64

    return [base64.b64decode(b) for b in
            re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_files_and_page(report: Path) -> None:
    folder = report.parent
    files = {p.name for p in folder.glob("*.png")}
    assert set(PLOTS) | {"arch-1.png", "arch-2.png", "arch-3.png"} <= files
    page = report.read_text()
    embedded = images_of(page)
    assert len(embedded) == page.count("<img ") == 8
    on_disk = {(folder / name).read_bytes() for name in files}
    for data in embedded:  # the page embeds exactly the PNG files next to it
        assert data in on_disk
        assert Image.open(io.BytesIO(data)).format == "PNG"
    # self-contained: nothing is fetched (links only to the PNGs beside it)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page
    rows = re.findall(r'<tr class="(\w+)">', page)
    assert len(rows) == 40 and rows.count("failed") >= 5
    assert "Runs compared" in page and "random" in page
    assert "params::60000:0.9" in page and "Best feasible" in page


def test_report_of_a_run_with_no_feasible_trial(runs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs["random"]), "--out", str(tmp_path), "--top", "2"]) == 0
    assert capsys.readouterr().out == f"report: {tmp_path / 'report.html'}\n"
    page = (tmp_path / "report.html").read_text()
    assert "No feasible trial" in page and "least violating" in page
    assert page.count("(infeasible)") == 2  # the two closest are still drawn
    assert {p.name for p in tmp_path.glob("arch-*.png")} == {"arch-1.png", "arch-2.png"}
    assert "mean reward in consecutive windows of trials" in page  # no episodes


@pytest.mark.slow
def test_report_of_a_tabular_and_a_cellwise_run(runs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("nb201", "cellwise"):
        path = write_report(runs[name], out=tmp_path / name)
        page = path.read_text()
        assert len(images_of(page)) == 8 and "no constraints" in page
    assert "tabular evaluator" in (tmp_path / "nb201" / "report.html").read_text()
    assert "input 3×32×32" in (tmp_path / "nb201" / "report.html").read_text()


def test_report_of_a_run_in_progress(runs: dict[str, Path], tmp_path: Path) -> None:
    # a copy of a finished run, then a batch started by "another process" (this one)
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["cellwise"], run, ignore=shutil.ignore_patterns("report"))
    store = Store(run)
    genome = store.trials()[0].genome
    store.open_batch(store.next_batch(), 2, [NewTrial(0, Candidate(genome), "running"),
                                             NewTrial(1, Candidate(genome), "queued")])
    try:
        page = write_report(run).read_text()
        assert re.search(r"running \(process \d+\)", page)
        assert page.count('<tr class="running">') == 1
        assert page.count('<tr class="queued">') == 1
    finally:
        store.close()
    page = write_report(run).read_text()
    assert f"stopped with 2 trials in flight (epnas resume {run})" in page


def test_names_are_escaped(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "<b>run & co</b>"
    shutil.copytree(runs["cellwise"], run, ignore=shutil.ignore_patterns("report"))
    page = write_report(run).read_text()
    assert "<b>run" not in page
    assert html.escape("<b>run & co</b>") in page


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == \
        f"epnas: error: run directory {tmp_path / 'missing'} does not exist\n"
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"epnas: error: {tmp_path} holds no study (study.db is " \
                                      "missing)\n"
    assert main(["report", str(tmp_path), "--top", "-1"]) == 2
    assert "--top must be 0 or more" in capsys.readouterr().err


def test_report_of_a_real_digits_search(tiny_run: Path, tmp_path: Path) -> None:
    page = write_report(tiny_run, out=tmp_path).read_text()
    assert "training evaluator on digits" in page and "input 1×8×8" in page
    assert len(re.findall(r'<tr class="(\w+)">', page)) == 4
    assert (tmp_path / "arch-1.png").is_file() and len(images_of(page)) >= 5
