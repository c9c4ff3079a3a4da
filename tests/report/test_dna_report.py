"""The report of a ``dna`` run: a table of rated parts per block, the chosen one marked."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from epnas.cli import main
from epnas.report.data import dna_blocks, ranked, read_run
from epnas.report.html import write_report


def search(out: Path, *args: str) -> Path:
    assert main(["search", "--evaluator", "synthetic", "--quiet", "--out", str(out),
                 *args]) == 0
    return out


def test_the_report_shows_every_blocks_parts_and_marks_the_chosen_one(tmp_path: Path) -> None:
    # multistage: a random genome's four stages are the four blocks; every 5th trial fails
    run_dir = search(tmp_path / "dna", "--space", "multistage", "--strategy", "dna",
                     "--strategy-opt", "per_block=3", "--evaluator-opt", "fail_every=5",
                     "--max-params", "100k", "--trials", "20")
    run = read_run(run_dir)
    blocks, final = dna_blocks(run)
    assert [len(parts) for parts in blocks] == [3, 3, 3, 3] and final is not None
    failed = [p for parts in blocks for p in parts if p.trial.status == "failed"]
    assert failed and all(p.rating == math.inf and not p.chosen for p in failed)
    chosen = [[p for p in parts if p.chosen] for parts in blocks]
    assert all(len(c) == 1 for c in chosen)
    assert [c[0].trial.info["part"] for c in chosen] == final.info["parts"]
    assert sum(c[0].rating for c in chosen) == pytest.approx(final.info["rating"])

    html = write_report(run_dir, top=0).read_text()
    assert "Blocks rated by distillation" in html
    for k, parts in enumerate(blocks):
        table = re.search(rf'<table class="dna-block" id="dna-block-{k}">(.*?)</table>', html,
                          re.S)
        assert table is not None
        rows = re.findall(r'<tr class="([^"]*)">', table.group(1))
        assert len(rows) == len(parts) and sum("chosen" in r for r in rows) == 1
        assert rows.index(next(r for r in rows if "chosen" in r)) == chosen[k][0].trial.info[
            "part"]
        assert table.group(1).count("✓ chosen") == 1
    assert f"trial #{final.id}, sums a rating of <b>{final.info['rating']:.4f}</b>" in html
    # the best architectures are whole networks: the parts' ratings measure something else
    assert [t.id for t in ranked(run, 5)] == [final.id]


def test_other_runs_have_no_block_tables(tmp_path: Path) -> None:
    run_dir = search(tmp_path / "random", "--strategy", "random", "--trials", "3")
    assert dna_blocks(read_run(run_dir)) == ([], None)
