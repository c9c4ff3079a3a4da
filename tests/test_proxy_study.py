"""``epnas proxy-study`` end to end on digits, with tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import epnas


def run(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epnas", *args], capture_output=True,
                          text=True, env={**os.environ, "EPNAS_CACHE": str(cache)}, timeout=300)


def test_proxy_study_writes_pairs_and_plot_and_reruns_from_its_cache(tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ("proxy-study", "--dataset", "digits", "--archs", "3", "--max-mflops", "0.5",
            "--min-mflops", "0.05",
            "--space-opt", "channels=8,16", "--proxy", "prediction,c=0.5,r=0.5,s=0.5,e=1",
            "--reference", "prediction,e=2", "--out", str(out))
    first = run(*args, cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    assert "Kendall tau" in first.stdout and "Spearman rho" in first.stdout
    report = json.loads((out / "pairs.json").read_text())
    assert report["proxy"] == "prediction,c=0.5,r=0.5,s=0.5,e=1"
    assert report["archs"] == 3 and len(report["pairs"]) == 3
    for pair in report["pairs"]:
        genome = epnas.load_genome(pair["genome"])
        assert 0.05 <= epnas.cost(genome, (1, 8, 8), 10).mflops <= 0.5
        assert 0 <= pair["proxy_accuracy"] <= 1 and 0 <= pair["reference_accuracy"] <= 1
    assert -1 <= report["kendall_tau"] <= 1 and -1 <= report["spearman_rho"] <= 1
    assert len(list((out / "results").glob("*.json"))) == 6
    with Image.open(out / "scatter.png") as image:
        assert image.format == "PNG" and image.size[0] > 100

    (out / "pairs.json").unlink()
    second = run(*args, "--json", cache=tmp_path / "cache")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("{") >= 1 and "trained" not in second.stderr
    assert second.stderr.count("cached") == 6  # nothing retrained
    again = json.loads(second.stdout)
    assert [p["reference_accuracy"] for p in again["pairs"]] == \
        [p["reference_accuracy"] for p in report["pairs"]]


def test_a_bad_proxy_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run("proxy-study", "--proxy", "c=0.25,q=3", "--out", str(tmp_path),
                 cache=tmp_path / "cache")
    assert result.returncode == 2
    assert result.stderr.startswith("epnas: error: fidelity 'c=0.25,q=3': unknown key 'q'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_cached_result_belongs_to_the_images_it_was_trained_on(tmp_path: Path) -> None:
    """Two data sets of one name (a subset and another subset) share no cache entry."""
    import dataclasses

    from epnas.data.datasets import load
    from epnas.evaluators.training import TrainingEvaluator
    from epnas.proxy_study import measure

    digits = load("digits")

    def subset(start: int) -> epnas.data.Dataset:
        return dataclasses.replace(digits, train_x=digits.train_x[start:start + 200],
                                   train_y=digits.train_y[start:start + 200])

    space = epnas.spaces.get("layerwise", channels=[4, 8], max_layers=3)
    genome = space.sample(np.random.default_rng(0))
    fidelity = "prediction,c=0.25,r=0.5,e=1"
    first = TrainingEvaluator(subset(0))
    trained = measure(first, [genome], fidelity, tmp_path)
    assert trained[0] is not None and not trained[0].cached
    again = measure(TrainingEvaluator(subset(0)), [genome], fidelity, tmp_path)
    assert again[0].cached and again[0].metrics == trained[0].metrics
    other = measure(TrainingEvaluator(subset(200)), [genome], fidelity, tmp_path,
                    train=lambda index: False)
    assert other == [None]  # not answered from the first subset's result
