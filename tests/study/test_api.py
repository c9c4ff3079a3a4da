"""The Python API: a Study on the user's own data, budgets given to optimize()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from sklearn.datasets import load_digits

import epnas


def test_study_on_user_tensors_optimizes_and_extends(tmp_path: Path) -> None:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # [N, 8, 8] floats in [0, 1]
    study = epnas.Study(space="layerwise", strategy="random", dataset=(images, digits.target),
                        evaluator_options={"schedule": {"epochs": 1}}, out=tmp_path / "run")
    with study:
        first = study.optimize(trials=2)
        assert first.trials == 2 and first.best is not None
        assert 0.0 <= first.best.metrics["accuracy"] <= 1.0
        assert first.best.metrics["params"] > 0
        more = study.optimize(trials=3)  # a larger budget continues the same run
    assert more.trials == 3
    assert study.config.dataset == "custom"
    stored = epnas.StudyConfig.parse(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert (stored.dataset, stored.trials) == ("custom", 3)
