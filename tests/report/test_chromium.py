"""The report in a real browser: Debian's headless Chromium (no driver, nothing
downloaded) opens report.html, every embedded image decodes, the trials table sorts on
a click, and a screenshot is written for people to look at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from epnas.report.data import read_run
from tests.report.conftest import ROOT

CHROMIUM = shutil.which("chromium")
SCREENSHOT = ROOT / "build" / "test-artifacts" / "report-screenshot.png"
WIDTH, HEIGHT = 1280, 2400

# The report shown full size in a frame; once it has loaded, the page clicks the
# accuracy column twice (descending) and writes what it sees into #result.
HARNESS = """<!DOCTYPE html>
<html><body style="margin:0">
<iframe id="report" src="{src}" style="border:0;width:{width}px;height:{height}px"></iframe>
<pre id="result">not loaded</pre>
<script>
document.getElementById("report").addEventListener("load", function () {{
  var doc = this.contentDocument;
  var check = doc.getElementById("image-check").dataset;
  var header = Array.from(doc.querySelectorAll("#trials th"))
    .filter(function (th) {{ return th.textContent === "accuracy"; }})[0];
  header.click();
  header.click();
  var ids = Array.from(doc.querySelectorAll("#trials tbody tr"))
    .map(function (row) {{ return row.cells[0].textContent; }});
  document.getElementById("result").textContent = "images " + check.imagesLoaded + "/" +
    check.imagesTotal + " images-in-page " + doc.images.length + " sorted " + ids.join(",");
}});
</script>
</body></html>
"""


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(src=report.as_uri(), width=WIDTH, height=HEIGHT))
    shot = report.parent / "screenshot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--allow-file-access-from-files",  # lets the harness read the framed report
         f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=20000",
         f"--screenshot={shot}", "--dump-dom", harness.as_uri()],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)})  # chromium writes its profile there
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"images (\d+)/(\d+) images-in-page (\d+) sorted ([\d,]+)", done.stdout)
    assert found, done.stdout[-2000:]
    loaded, total, in_page, order = found.groups()
    assert loaded == total == in_page == "8"
    run = read_run(report.parent.parent)
    accuracy = {t.id: t.accuracy for t in run.trials}
    ids = [int(i) for i in order.split(",")]
    assert sorted(ids) == sorted(accuracy)
    shown = [accuracy[i] for i in ids]
    numbers = [a for a in shown if a is not None]
    assert numbers == sorted(numbers, reverse=True)  # descending, blanks (failures) last
    assert shown[len(numbers):] == [None] * (len(shown) - len(numbers))
    image = Image.open(shot)
    assert image.size == (WIDTH, HEIGHT)
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 1000  # not a blank page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
