"""The meaning of each progressive action, pinned down on small hand-made genomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import epnas
from epnas.errors import ActionError
from epnas.spaces import Branch, Insert, Keep, Layer, Remove, Scale

LW = epnas.spaces.get("layerwise", groups=2, max_layers=6)


def conv(uid: int, src1: int, src2: int = -1, channels: int = 32, width: int = 3) -> Layer:
    return Layer(uid, "conv", src1, src2, width, channels, "relu")


def chain() -> epnas.spaces.LayerwiseGenome:
    # 1 <- 0, 2 <- 1 (+ skip 1), 3 <- 2, 4 <- 3 (+ skip 1)
    return LW.genome([conv(1, 0), conv(2, 1, 1), conv(3, 2), conv(4, 3, 1)])


def refs(genome: epnas.Genome) -> list[tuple[int, int, int]]:
    return [(u.uid, u.src1, u.src2) for u in genome.layers]


def test_insert_splices_after_place_and_keeps_skips() -> None:
    g = LW.apply(chain(), Insert("maxpool", place=1, src2=-1, pool=2))
    assert refs(g) == [(1, 0, -1), (5, 1, -1), (2, 2, 1), (3, 3, -1), (4, 4, 1)]
    assert g.layers[1] == Layer(5, "maxpool", 1, -1, 2)


def test_insert_at_the_end_becomes_the_output() -> None:
    g = LW.apply(chain(), Insert("conv", place=4, src2=0, width=5, channels=64, act="elu"))
    assert refs(g)[-1] == (5, 4, 0) and LW.size(g) == 5


def test_remove_rewires_consumers_to_the_removed_input() -> None:
    g = LW.apply(chain(), Remove(2))
    assert refs(g) == [(1, 0, -1), (3, 1, -1), (4, 2, 1)]
    g = LW.apply(chain(), Remove(1))  # readers of layer 1 (Src1 and skips) now read the stem
    assert refs(g) == [(2, 0, 0), (3, 1, -1), (4, 2, 0)]


def test_scale_moves_one_group_one_table_step() -> None:
    g = LW.apply(chain(), Scale(0, "channels", +1))
    assert [u.channels for u in g.layers] == [64, 64, 32, 32]
    g = LW.apply(g, Scale(1, "width", -1))
    assert [u.width for u in g.layers] == [3, 3, 1, 1]
    top = LW.genome([conv(1, 0, channels=256), conv(2, 1, channels=128), conv(3, 2)])
    assert [u.channels for u in LW.apply(top, Scale(0, "channels", 1)).layers] == [256, 256, 32]


def test_scale_that_moves_nothing_is_illegal_and_masked() -> None:
    g = LW.genome([conv(1, 0, channels=256, width=7), conv(2, 1, channels=256, width=7)])
    masks = [dict(zip(d.choices, d.mask)) for d in LW.actions(g).scale]
    assert masks[0] == {"keep": True, "channels-": True, "channels+": False, "width-": True,
                        "width+": False}
    with pytest.raises(ActionError, match="no layer of group 0"):
        LW.apply(g, Scale(0, "channels", +1))


def test_limits_are_masked_and_enforced() -> None:
    one = LW.genome([conv(1, 0)])
    kinds = LW.actions(one).next_decision({})
    assert dict(zip(kinds.choices, kinds.mask)) == {"insert": True, "remove": False,
                                                   "keep": True}
    with pytest.raises(ActionError, match="minimum"):
        LW.apply(one, Remove(1))
    full = LW.genome([conv(i, i - 1) for i in range(1, 7)])
    assert not LW.actions(full).next_decision({}).mask[0]
    with pytest.raises(ActionError, match="max_layers"):
        LW.apply(full, Insert("conv", 6, -1, 3, None, 32, "relu"))


def test_place_check_table_depends_on_the_number_of_layers() -> None:
    actions = LW.actions(chain())
    place = actions.next_decision({"kind": "insert", "op": "conv"})
    assert place.name == "place" and place.legal == (0, 1, 2, 3, 4)
    deep = epnas.spaces.get("layerwise", groups=2, max_layers=6, insert_prior="deep")
    g = deep.genome(chain().layers)
    probs = deep.actions(g).next_decision({"kind": "insert", "op": "conv"}).probs()
    assert np.allclose(probs, [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15, 0])
    src2 = actions.next_decision({"kind": "insert", "op": "add", "place": 2})
    assert src2.legal == (0, 1, 2)  # an add needs a skip; sources up to the place


def test_uids_follow_their_layers() -> None:
    g = LW.apply(chain(), Insert("conv", 0, -1, 3, None, 16, "relu"))
    g = LW.apply(g, Remove(3))
    assert [u.uid for u in g.layers] == [5, 1, 3, 4]


def test_keep_returns_the_same_genome() -> None:
    g = chain()
    assert LW.apply(g, Keep()) is g


CW = epnas.spaces.get("cellwise", max_branches=4)


def branch(uid: int, src1: int, src2: int, propagate: int = 1) -> Branch:
    return Branch(uid, "conv-none", src1, src2, 16, 3, None, propagate)


def test_cellwise_remove_hands_propagation_to_its_input() -> None:
    g = CW.genome([branch(1, 0, 0, propagate=0), branch(2, 1, 0)])
    after = CW.apply(g, Remove(2))
    assert after.branches == (branch(1, 0, 0, propagate=1),)


def test_cellwise_cannot_remove_the_only_way_to_the_output() -> None:
    g = CW.genome([branch(1, 0, 0, propagate=0), branch(2, 0, 1)])
    target = CW.actions(g).next_decision({"kind": "remove"})
    assert target.legal == (1,)
    with pytest.raises(ActionError, match="only branch that reaches"):
        CW.apply(g, Remove(2))


def test_cellwise_insert_adds_a_branch_with_all_its_fields() -> None:
    g = CW.genome([branch(1, 0, 0)])
    g = CW.apply(g, Insert("conv-maxpool", place=1, src2=0, width=5, pool=3, channels=24,
                           propagate=0))
    assert g.branches[1] == Branch(2, "conv-maxpool", 1, 0, 24, 5, 3, 0)


NB = epnas.spaces.get("nb201")


def test_nb201_insert_sets_an_edge_and_remove_clears_it() -> None:
    g = NB.from_arch("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    g = NB.apply(g, Insert("nor_conv_3x3", place=0))
    assert g.arch == "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    g = NB.apply(g, Remove(3))
    assert g.ops[3] == "none"
    op = NB.actions(g).next_decision({"kind": "insert", "place": 0})
    assert set(op.legal) == {"skip_connect", "nor_conv_1x1", "avg_pool_3x3"}
    assert NB.actions(g).scale == ()
    with pytest.raises(ActionError):
        NB.apply(g, Remove(3))


BENCHMARK = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "nb201_cifar10.csv"


@pytest.mark.skipif(not BENCHMARK.exists(), reason=f"{BENCHMARK} not present")
def test_every_benchmark_arch_string_round_trips() -> None:
    archs = [line.split(",", 1)[0] for line in BENCHMARK.read_text().splitlines()[1:]]
    assert len(archs) == 15625
    keys = {NB.from_arch(a).key for a in archs}
    assert len(keys) == 15625
    assert all(NB.from_arch(a).arch == a for a in archs[::97])
