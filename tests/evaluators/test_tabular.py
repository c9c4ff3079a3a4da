"""The tabular NAS-Bench-201 evaluator: real lookups, fidelities, costs, bad tables."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas import EpnasError
from epnas.evaluators import EVALUATORS, TabularEvaluator, tabular
from epnas.trial import Candidate

BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
BEST_TIED = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
             "|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
NO_PATH = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"  # 0->3 cut
ALL_CONV = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
            "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
HEADER = "arch,test_acc_200ep,val_acc_12ep,test_acc_12ep"

needs_csv = pytest.mark.skipif(
    not tabular.PACKAGED_CSV.is_file(),
    reason=f"the packaged NAS-Bench-201 CSV is not at {tabular.PACKAGED_CSV}")

NB201 = epnas.spaces.get("nb201")


@pytest.fixture(scope="module")
def shared() -> TabularEvaluator:
    return TabularEvaluator(tabular.PACKAGED_CSV)


def ask(arch: str, fidelity: str | None = None) -> Candidate:
    return Candidate(NB201.from_arch(arch), fidelity)


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_csv
def test_the_two_best_cells_and_a_cut_cell(shared: TabularEvaluator) -> None:
    for arch in (BEST, BEST_TIED):
        result = shared.evaluate(ask(arch))
        assert result.status == "done"
        assert result.metrics["accuracy"] == pytest.approx(0.943733, abs=1e-12)
        assert set(shared.metrics) <= set(result.metrics)
    assert shared.evaluate(ask(NO_PATH)).metrics["accuracy"] == pytest.approx(0.10)
    assert shared.best() == (BEST, pytest.approx(0.943733))  # first of the tie in file order
    assert len(shared) == 15625


@needs_csv
def test_fidelities(shared: TabularEvaluator) -> None:
    assert shared.evaluate(ask(BEST, "12ep")).metrics["accuracy"] == pytest.approx(0.84892)
    assert shared.evaluate(ask(BEST_TIED, "12ep")).metrics["accuracy"] == pytest.approx(0.84384)
    assert shared.evaluate(ask(ALL_CONV, "200ep")).metrics["accuracy"] == pytest.approx(0.9376)
    assert shared.evaluate(ask(ALL_CONV)).metrics["accuracy"] == pytest.approx(0.9376)
    assert shared.accuracy_of(ALL_CONV, "12ep") == pytest.approx(0.69078)
    assert shared.best("12ep") == (BEST, pytest.approx(0.84892))
    failed = shared.evaluate(ask(BEST, "prediction"))
    assert failed.status == "failed" and "'prediction'" in failed.error and "12ep" in failed.error
    with pytest.raises(EpnasError, match="'50ep'"):
        shared.accuracy_of(BEST, "50ep")


@needs_csv
def test_items_cover_the_table_and_agree_with_lookups(shared: TabularEvaluator) -> None:
    items = shared.items()
    assert len(items) == 15625 and len({arch for arch, _ in items}) == 15625
    assert max(acc for _, acc in items) == pytest.approx(0.943733)
    arch, acc = items[1234]
    assert shared.accuracy_of(arch) == acc == shared.accuracy_of(NB201.from_arch(arch))
    proxy = dict(shared.items("12ep"))
    assert proxy[arch] == shared.evaluate(ask(arch, "12ep")).metrics["accuracy"]
    assert all(0.0 <= a <= 1.0 for _, a in items)
    with pytest.raises(EpnasError, match="not in"):
        shared.accuracy_of("|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|")


@needs_csv
def test_costs_come_from_the_cost_model(shared: TabularEvaluator) -> None:
    genome = NB201.from_arch(BEST)
    metrics = shared.evaluate(Candidate(genome)).metrics
    expected = epnas.cost(genome, (3, 32, 32), 10)
    assert metrics["params"] == expected.params == 1073466  # NAS-Bench-201 reports 1.07 M
    assert (metrics["flops"], metrics["bytes"]) == (expected.flops, expected.bytes)
    assert metrics["intensity"] == pytest.approx(expected.intensity)
    assert metrics["train_seconds"] == 0.0
    other = TabularEvaluator(tabular.PACKAGED_CSV, input_shape=(3, 16, 16), num_classes=100)
    assert other.evaluate(Candidate(genome)).metrics["params"] == epnas.cost(
        genome, (3, 16, 16), 100).params


@needs_csv
def test_queries_count_every_call() -> None:
    evaluator = TabularEvaluator(tabular.PACKAGED_CSV)
    evaluator.evaluate(ask(BEST))
    evaluator.evaluate(ask(BEST))  # a repeat is a query too
    evaluator.evaluate(ask(BEST, "nonsense"))
    evaluator.accuracy_of(BEST)  # benchmark bookkeeping is not a query
    assert evaluator.queries == 3


@needs_csv
def test_only_standard_nb201_genomes(shared: TabularEvaluator) -> None:
    layerwise = epnas.spaces.get("layerwise").sample(np.random.default_rng(0))
    result = shared.evaluate(Candidate(layerwise))
    assert result.status == "failed" and result.reason == "error"
    assert "nb201 genomes only" in result.error and "'layerwise'" in result.error
    narrow = epnas.spaces.get("nb201", channels=8).from_arch(BEST)
    result = shared.evaluate(Candidate(narrow))
    assert result.status == "failed" and "channels=8" in result.error
    no_pool = epnas.spaces.get("nb201", ops=("none", "nor_conv_3x3", "skip_connect",
                                              "nor_conv_1x1"))
    assert shared.evaluate(Candidate(no_pool.from_arch(BEST))).metrics["accuracy"] == \
        pytest.approx(0.943733)


def test_registered() -> None:
    assert EVALUATORS.resolve("tabular") == ("tabular", TabularEvaluator)


def test_any_csv_with_the_schema_by_path(tmp_path: Path) -> None:
    # columns in another order, plus one the evaluator ignores
    path = write(tmp_path / "mini.csv", "note,val_acc_12ep,arch,test_acc_200ep",
                 f"a,50.5,{BEST},90.0", f"b,40.0,{NO_PATH},10.0", f"c,45.0,{ALL_CONV},91.25")
    evaluator = TabularEvaluator(path)
    assert len(evaluator) == 3
    assert evaluator.evaluate(ask(ALL_CONV)).metrics["accuracy"] == pytest.approx(0.9125)
    assert evaluator.evaluate(ask(BEST, "12ep")).metrics["accuracy"] == pytest.approx(0.505)
    assert evaluator.best() == (ALL_CONV, pytest.approx(0.9125))
    missing = evaluator.evaluate(ask(BEST_TIED))
    assert missing.status == "failed" and str(path) in missing.error


def test_objective_column(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", HEADER, f"{BEST},90.0,50.0,80.0", f"{NO_PATH},10,9,10")
    evaluator = TabularEvaluator(path, objective_column="test_acc_12ep")
    assert evaluator.evaluate(ask(BEST)).metrics["accuracy"] == pytest.approx(0.80)
    assert evaluator.evaluate(ask(BEST, "12ep")).metrics["accuracy"] == pytest.approx(0.50)
    with pytest.raises(EpnasError, match=r"no column.*test_acc_90ep"):
        TabularEvaluator(path, objective_column="test_acc_90ep")


def test_default_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "env.csv", HEADER, f"{BEST},77.0,50.0,60.0")
    monkeypatch.setenv(tabular.ENV_VAR, str(path))
    evaluator = TabularEvaluator()
    assert evaluator.path == path and evaluator.best() == (BEST, pytest.approx(0.77))


def test_the_default_table_is_the_packaged_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tabular.ENV_VAR, raising=False)
    assert tabular.default_path() == tabular.PACKAGED_CSV
    assert tabular.PACKAGED_CSV.is_relative_to(Path(epnas.__file__).parent)
    shared = Path(epnas.__file__).resolve().parents[2] / "shared/benchmarks/nb201_cifar10.csv"
    if shared.is_file():  # the team's copy, where the packaged one came from
        assert shared.read_bytes() == tabular.PACKAGED_CSV.read_bytes()


def test_no_default_table_says_where_it_looked(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tabular.ENV_VAR, raising=False)
    monkeypatch.setattr(tabular, "PACKAGED_CSV", tmp_path / "absent.csv")
    with pytest.raises(EpnasError) as info:
        TabularEvaluator()
    message = str(info.value)
    assert str(tmp_path / "absent.csv") in message and "--data PATH" in message
    assert tabular.ENV_VAR in message and "\n" not in message


BAD_TABLES = {
    "empty": ((), "is empty"),
    "header only": ((HEADER,), "no rows"),
    "missing column": (("arch,test_acc_200ep", f"{BEST},90"), "no column.*val_acc_12ep"),
    "ragged row": ((HEADER, f"{BEST},90,50"), "line 2: 3 fields"),
    "not a number": ((HEADER, f"{BEST},90,n/a,1"), "line 2: val_acc_12ep = 'n/a'"),
    "not a percentage": ((HEADER, f"{BEST},190,50,1"), "test_acc_200ep = '190'"),
    "nan": ((HEADER, f"{NO_PATH},10,10,10", f"{BEST},nan,50,1"), "line 3: test_acc_200ep"),
    "bad arch": ((HEADER, "|conv~0|+|none~0|,90,50,1"), "line 2: arch"),
    "unknown op": ((HEADER, BEST.replace("nor_conv_1x1", "conv_5x5") + ",90,50,1"),
                   "unknown op.*conv_5x5"),
    "duplicate": ((HEADER, f"{BEST},90,50,1", f"{BEST},91,50,1"), "line 3: arch .* twice"),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_bad_tables_give_one_clear_line(case: str, tmp_path: Path) -> None:
    lines, pattern = BAD_TABLES[case]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(EpnasError, match=pattern) as info:
        TabularEvaluator(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EpnasError, match=r"cannot read tabular benchmark .*nope\.csv"):
        TabularEvaluator(tmp_path / "nope.csv")


def test_parsed_once_per_path_until_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", HEADER, f"{BEST},90.0,50.0,80.0")
    first, second = TabularEvaluator(path), TabularEvaluator(path)
    assert first.table is second.table
    write(path, HEADER, f"{BEST},92.5,50.0,80.0", f"{NO_PATH},10,9,10")
    assert TabularEvaluator(path).accuracy_of(BEST) == pytest.approx(0.925)


@needs_csv
def test_loading_the_full_table_is_fast() -> None:
    start = time.perf_counter()
    tabular._parse(tabular.PACKAGED_CSV, ("test_acc_200ep", "val_acc_12ep"))
    assert time.perf_counter() - start < 1.0
