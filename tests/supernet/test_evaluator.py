"""The ``supernet`` evaluator: early-exit accuracy and average FLOPs of sub-networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from epnas import spaces
from epnas.errors import EpnasError
from epnas.evaluators import EVALUATORS
from epnas.evaluators.supernet import Outcome, SupernetEvaluator, confidences, early_exit
from epnas.strategies.filters import Limit
from epnas.testing import check_evaluator
from epnas.trial import Candidate
from tests.supernet.conftest import TINY


@pytest.fixture(scope="module")
def space():
    return spaces.get("multistage", **TINY)


def _genome(space, seed: int = 0):
    return space.sample(np.random.default_rng(seed))


def test_registered_and_passes_the_evaluator_contract(supernet_dir: Path, space) -> None:
    assert EVALUATORS.resolve("supernet")[1] is SupernetEvaluator
    check_evaluator(SupernetEvaluator(str(supernet_dir), device="cpu"), space)


def test_avg_flops_is_the_mixture_of_exit_costs(supernet_dir: Path, space) -> None:
    genome = _genome(space)
    probe = SupernetEvaluator(str(supernet_dir), device="cpu")
    conf0 = probe.outcome(genome)[0].conf[0]
    threshold = float(np.median(conf0))
    share0 = float((conf0 >= threshold).mean())  # by hand: who is confident at exit 0
    assert 0 < share0 < 1  # the threshold splits the inputs
    evaluator = SupernetEvaluator(str(supernet_dir), thresholds=[threshold], device="cpu")
    m = evaluator.evaluate(Candidate(genome)).metrics
    flops = [c.flops for c in space.exit_costs(genome, (1, 8, 8), 10)]
    assert m["exit0_share"] == pytest.approx(share0)
    assert m["exit1_share"] == pytest.approx(1 - share0)
    assert m["avg_flops"] == pytest.approx(share0 * flops[0] + (1 - share0) * flops[1])
    assert m["threshold0"] == pytest.approx(threshold)
    assert m["flops"] == pytest.approx(flops[-1])
    assert evaluator.costs(genome)["avg_flops"] == pytest.approx(flops[0])
    assert flops[0] <= m["avg_flops"]


@pytest.mark.parametrize("exit_conv", [False, True])
def test_static_flops_skip_the_earlier_exit_heads(supernet_dir: Path, exit_conv: bool) -> None:
    s = spaces.get("multistage", **{**TINY, "exit_conv": exit_conv})
    genome = _genome(s, 3)
    with torch.device("meta"):  # what the static network computes: no earlier exit
        model = s.build(genome, (1, 8, 8), 10).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            x = model.stem(model.resize(torch.empty(1, 1, 8, 8)))
            for blocks in model.stages:
                for block in blocks:
                    x = block(x)
            model.exits[-1](x)
    evaluator = SupernetEvaluator(str(supernet_dir), device="cpu")
    assert evaluator.static_flops(genome) == counter.get_total_flops()
    assert evaluator.static_flops(genome) < evaluator.costs(genome)["flops"]


def test_early_exit_and_threshold_choice_under_a_cap() -> None:
    conf = np.array([[0.9, 0.2, 0.8, 0.1], [0, 0, 0, 0]])
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=bool)
    assert early_exit(conf, [0.5]).tolist() == [0, 1, 0, 1]
    simulate = Outcome(conf, correct, [10.0, 30.0])
    assert simulate([0.5])[:2] == (0.5, 20.0)
    # no cap: nothing leaves early unless it costs no accuracy (input 0 only)
    taus = simulate.choose(None)
    assert simulate(taus)[:2] == (0.75, 25.0)
    # a cap of 20 FLOPs forces two inputs out at exit 0: the most confident ones
    taus = simulate.choose(20.0)
    accuracy, flops, share = simulate(taus)
    assert flops <= 20.0 and accuracy == 0.5 and share.tolist() == [0.5, 0.5]
    # an impossible cap: everything at the first exit
    assert simulate(simulate.choose(5.0))[1] == 10.0


def test_the_study_cap_is_respected(supernet_dir: Path, space) -> None:
    genome = _genome(space, 1)
    free = SupernetEvaluator(str(supernet_dir), device="cpu").evaluate(Candidate(genome))
    low, high = free.metrics["exit0_flops"], free.metrics["exit1_flops"]
    cap = low + 0.3 * (high - low)
    capped = SupernetEvaluator(str(supernet_dir), constraints=[f"avg_flops::{cap}"],
                               device="cpu").evaluate(Candidate(genome))
    assert capped.metrics["avg_flops"] <= cap
    assert capped.metrics["exit0_share"] >= 0.7 - 1e-9


def test_entropy_criterion() -> None:
    import torch

    logits = torch.tensor([[[5.0, 0.0], [0.0, 0.0]]])
    conf = confidences(logits, "entropy")[0]
    assert conf[1] == pytest.approx(-np.log(2)) and conf[0] > conf[1]


def test_bad_options_fail_with_one_line(tmp_path: Path, supernet_dir: Path) -> None:
    with pytest.raises(EpnasError, match="holds no supernet"):
        SupernetEvaluator(str(tmp_path))
    with pytest.raises(EpnasError, match="criterion"):
        SupernetEvaluator(str(supernet_dir), criterion="margin")
    with pytest.raises(EpnasError, match="1 values"):
        SupernetEvaluator(str(supernet_dir), thresholds=[0.5, 0.5])
    with pytest.raises(EpnasError, match="trained on digits"):
        SupernetEvaluator(str(supernet_dir), dataset="cifar10")


def test_a_genome_of_other_space_options_fails(supernet_dir: Path) -> None:
    other = spaces.get("multistage", **{**TINY, "widths": (8, 12)})
    result = SupernetEvaluator(str(supernet_dir), device="cpu").evaluate(
        Candidate(_genome(other)))
    assert result.status == "failed" and "space options" in (result.error or "")


def test_avg_flops_filters_use_the_lower_bound(supernet_dir: Path, space) -> None:
    evaluator = SupernetEvaluator(str(supernet_dir), device="cpu")
    genome = _genome(space)
    costs = evaluator.costs(genome)
    assert Limit.parse(f"max-avg_flops={costs['avg_flops']}").allows(costs)
    assert not Limit.parse(f"max-avg_flops={costs['avg_flops'] * 0.99}").allows(costs)
