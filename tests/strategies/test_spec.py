"""Strategy specs ``NAME[KEY=VALUE,...][+filter]``: parsing, and ``epnas search --strategy``."""

from __future__ import annotations

import pytest
import yaml

from epnas.cli import main
from epnas.errors import EpnasError
from epnas.objective import Objective
from epnas.strategies.filters import Limit, constraint_limits
from epnas.strategies.spec import StrategySpec, parse, split


@pytest.mark.parametrize(("text", "spec"), [
    ("epnas", StrategySpec("epnas", {}, False)),
    (" epnas[lr=0] ", StrategySpec("epnas", {"lr": 0}, False)),
    ("epnas[lr=0.5,entropy-weight=1e-2]", StrategySpec("epnas", {"lr": 0.5,
                                                                 "entropy_weight": "1e-2"})),
    ("econas[levels=[12ep,200ep],promote=0.25]",
     StrategySpec("econas", {"levels": ["12ep", "200ep"], "promote": 0.25})),
    ("random+filter", StrategySpec("random", {}, True)),
    ("evolution[population=10]+filter", StrategySpec("evolution", {"population": 10}, True)),
    ("my_pkg.search:Greedy", StrategySpec("my_pkg.search:Greedy")),
    ("my_pkg.search:Greedy[depth=3,name=wide]+filter",
     StrategySpec("my_pkg.search:Greedy", {"depth": 3, "name": "wide"}, True)),
    ("epnas[]", StrategySpec("epnas")),
])
def test_parse(text: str, spec: StrategySpec) -> None:
    assert parse(text) == spec


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected NAME"),
    ("epnas[lr=0", "expected NAME"),
    ("epnas[lr=0]x", "expected NAME"),
    ("epnas[lr=0]]", "unbalanced"),
    ("epnas[lr]", "'lr' is not KEY=VALUE"),
    ("epnas[lr=0,lr=1]", "given twice"),
    ("epnas[lr=[0]", "unbalanced"),
    ("epnas[lr=0]+filterx", "expected NAME"),
    ("epnas+other", "expected NAME"),
    ("my pkg:Greedy", "expected NAME"),
    ("epnas[x=: y]", "cannot read the value"),
])
def test_bad_specs_are_one_line(text: str, message: str) -> None:
    with pytest.raises(EpnasError, match="strategy spec") as caught:
        parse(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_split_keeps_commas_inside_brackets() -> None:
    assert split("epnas, epnas[lr=0,entropy=0.1],random+filter,m:C[a=[1,2]],") == [
        "epnas", "epnas[lr=0,entropy=0.1]", "random+filter", "m:C[a=[1,2]]"]
    with pytest.raises(EpnasError, match="unbalanced"):
        split("epnas[lr=0,random")


def test_constraints_become_filter_limits() -> None:
    objective = Objective.of(["params::100k", "flops:1M:20M", "latency::0.01",
                              "intensity:8:"])
    assert constraint_limits(objective) == [
        Limit("params", 1e5), Limit("flops", 20e6), Limit("flops", 1e6, upper=False),
        Limit("intensity", 8, upper=False)]
    with pytest.raises(EpnasError, match=r"\+filter needs a constraint"):
        constraint_limits(Objective.of(["latency::0.01"]))


def print_config(*args: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["search", "--space", "nb201", *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_search_takes_a_spec(capsys: pytest.CaptureFixture[str]) -> None:
    config = print_config("--strategy", "evolution[population=10,sample=3]+filter",
                          "--strategy-opt", "population=12", "--max-params", "300k",
                          "--filter", "min-intensity=2", capsys=capsys)
    # the plain name is stored (resume and config.yaml stay as they are); the explicit
    # --strategy-opt wins over the bracket; +filter adds the constraint as a limit
    assert config["strategy"] == "evolution"
    assert config["strategy_options"] == {"population": 12, "sample": 3}
    assert config["filters"] == ["min-intensity=2", "max-params=300000"]
    assert config["out"].startswith("runs/nb201-evolution-")
    plain = print_config("--strategy", "evolution", capsys=capsys)
    assert plain["strategy_options"] == {} and plain["filters"] == []


def test_search_spec_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for spec, message in (("random+filter", "+filter needs a constraint"),
                          ("random[depth=1", "strategy spec")):
        assert main(["search", "--space", "nb201", "--strategy", spec, "--print-config"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0]
