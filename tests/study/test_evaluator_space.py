"""What a new study decides before it records its config: the space (the evaluator's own
where it has one) and the paths its evaluator reads (absolute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from epnas.config import StudyConfig
from epnas.study import recorded_paths, with_evaluator_space


def test_existing_paths_are_recorded_absolute(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    config = recorded_paths(StudyConfig.parse({
        "evaluator": "training", "data": "data",
        "evaluator_options": {"data": "data", "device": "data", "schedule": {"epochs": 1}}}))
    assert config.data == str(tmp_path / "data")
    assert config.evaluator_options == {"data": str(tmp_path / "data"), "device": "data",
                                        "schedule": {"epochs": 1}}  # data alone is a path
    missing = recorded_paths(StudyConfig.parse({"evaluator": "training", "data": "nowhere"}))
    assert missing.data == "nowhere"  # left for the data set's own error to name


def test_a_space_is_decided_where_none_is_named() -> None:
    plain = with_evaluator_space(StudyConfig.parse({"evaluator": "synthetic"}))
    assert (plain.space, plain.space_options) == ("layerwise", {})
    given = with_evaluator_space(StudyConfig.parse({"evaluator": "synthetic",
                                                    "space": "nb201"}))
    assert given.space == "nb201"


def test_a_distill_teacher_is_recorded_absolute(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher").mkdir()
    config = recorded_paths(StudyConfig.parse({
        "evaluator": "distill",
        "evaluator_options": {"teacher": "teacher", "loss": "mse"}}))
    assert config.evaluator_options == {"teacher": str(tmp_path / "teacher"), "loss": "mse"}
    module = recorded_paths(StudyConfig.parse({
        "evaluator": "distill", "evaluator_options": {"teacher": "pkg.mod:make"}}))
    assert module.evaluator_options == {"teacher": "pkg.mod:make"}  # not a path: as given
