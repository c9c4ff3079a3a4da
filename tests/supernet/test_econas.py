"""EcoNAS on the ``supernet`` evaluator: it trains nothing, so of the reduced settings only
the sample share ``s`` applies (a seeded share of the validation set); the others are
refused before the study writes anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epnas import spaces
from epnas.errors import EpnasError
from epnas.evaluators.supernet import SupernetEvaluator
from epnas.study import Study
from epnas.trial import Candidate
from tests.supernet.conftest import TINY


def test_a_sample_share_rates_on_a_seeded_share_of_the_validation_set(
        supernet_dir: Path) -> None:
    evaluator = SupernetEvaluator(str(supernet_dir), device="cpu", seed=3)
    genome = spaces.get("multistage", **TINY).sample(np.random.default_rng(0))
    whole = evaluator.outcome(genome)[0]
    half = evaluator.outcome(genome, share=evaluator.share("s=0.5"))[0]
    assert half.conf.shape[1] == round(0.5 * whole.conf.shape[1])
    again = evaluator.outcome(genome, share=0.5)[0]
    assert np.array_equal(half.conf, again.conf)  # the same images for every genome
    for fidelity in (None, "full"):
        assert evaluator.share(fidelity) == 1.0
    accuracy = evaluator.evaluate(Candidate(genome, "s=0.5")).metrics["static_accuracy"]
    assert accuracy == pytest.approx(half.correct[-1].mean())
    for fidelity in ("c=0.25,r=0.5,s=0.5,e=5", "e=5", "prediction", "r=0.5"):
        with pytest.raises(EpnasError, match="only s"):
            evaluator.check_fidelity(fidelity)


def test_econas_with_the_supernet(supernet_dir: Path, tmp_path: Path) -> None:
    options = {"path": str(supernet_dir), "device": "cpu"}
    out = tmp_path / "run"
    with pytest.raises(EpnasError, match=r"asks for fidelity 'c=0\.25,r=0\.5,s=0\.5,e=5'.*only s"):
        Study(strategy="econas", evaluator="supernet", evaluator_options=options, out=out)
    assert not out.exists()
    study = Study(strategy="econas", strategy_options={"levels": "s=0.25,full",
                                                       "generation": 2, "population": 2},
                  evaluator="supernet", evaluator_options=options, trials=6)
    summary = study.run()
    assert {t.fidelity for t in study.trials()} == {"s=0.25", "full"}
    assert all(t.status == "done" for t in study.trials())
    assert summary.best is not None and summary.best.fidelity == "full"
