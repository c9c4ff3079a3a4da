"""Bad genomes raise a ValueError subclass whose message names the offending field."""

from __future__ import annotations

import json

import numpy as np
import pytest

import epnas
from epnas.errors import GenomeError

LAYER = {"uid": 1, "op": "conv", "src1": 0, "src2": -1, "width": 3, "channels": 32,
         "act": "relu"}


def layerwise_json(layers: list[dict], **options: object) -> str:
    space = epnas.spaces.get("layerwise", **options)
    return json.dumps({"format": 1, "space": "layerwise",
                       "options": space.options.model_dump(mode="json"), "layers": layers})


def test_genome_error_is_a_value_error() -> None:
    assert issubclass(GenomeError, ValueError)


@pytest.mark.parametrize(("layers", "field"), [
    ([{**LAYER, "op": "deconv"}], r"layers\[1\]\.op"),
    ([{**LAYER, "act": "tanh"}], r"layers\[1\]\.act"),
    ([{**LAYER, "channels": 17}], r"layers\[1\]\.channels"),
    ([{**LAYER, "width": 4}], r"layers\[1\]\.width"),
    ([{**LAYER, "width": 3.0}], r"layers\[1\]\.width"),
    ([{**LAYER, "channels": True}], r"layers\[1\]\.channels"),
    ([LAYER, {**LAYER, "uid": 2, "src1": 7}], r"layers\[2\]\.src1 = 7"),
    ([LAYER, {**LAYER, "uid": 2, "src2": -3}], r"layers\[2\]\.src2"),
    ([LAYER, {**LAYER, "uid": 2, "src1": 2}], r"layers\[2\]\.src1 = 2.*cycle"),
    ([LAYER, {**LAYER, "uid": 1}], r"uids must be unique"),
    ([{**LAYER, "op": "maxpool", "width": 2}], r"layers\[1\]\.channels"),
    ([{**LAYER, "stride": 2}], r"layers\[1\]: unknown key"),
    ([{"uid": 1, "op": "conv"}], r"layers\[1\]: missing \['src1'\]"),
    ([], r"layers: 0 layers"),
])
def test_bad_layerwise_genomes_name_the_field(layers: list[dict], field: str) -> None:
    with pytest.raises(GenomeError, match=field):
        epnas.load_genome(layerwise_json(layers))


def test_too_many_layers_names_max_layers() -> None:
    layers = [{**LAYER, "uid": i, "src1": i - 1} for i in range(1, 6)]
    with pytest.raises(GenomeError, match=r"5 layers.*max_layers"):
        epnas.load_genome(layerwise_json(layers, max_layers=4))


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "malformed"),
    ("[1, 2]", "must be an object"),
    ('{"format": 1, "layers": []}', "space"),
    ('{"format": 9, "space": "layerwise", "layers": []}', "format"),
    ('{"format": 1, "space": "no-such-space", "layers": []}', "unknown space"),
    ('{"format": 1, "space": "nb201", "options": {"bogus": 1}, "arch": ""}', "bogus"),
])
def test_bad_json_envelopes(text: str, message: str) -> None:
    with pytest.raises(GenomeError, match=message):
        epnas.load_genome(text)


def test_genome_loaded_into_the_wrong_space_is_refused() -> None:
    genome = epnas.spaces.get("nb201").sample(np.random.default_rng(0))
    with pytest.raises(GenomeError, match="space: genome is for 'nb201'"):
        epnas.spaces.get("layerwise").genome_from_dict(genome.to_dict())


def test_genome_under_other_options_is_refused() -> None:
    genome = epnas.spaces.get("layerwise").sample(np.random.default_rng(0), depth=2)
    with pytest.raises(GenomeError, match="options"):
        epnas.spaces.get("layerwise", max_layers=8).validate(genome)


@pytest.mark.parametrize(("branch", "field"), [
    ({"type": "conv-sepconv"}, r"branches\[1\]\.type"),
    ({"src2": 1}, r"branches\[1\]\.src2 = 1.*cycle"),
    ({"pool": 2}, r"branches\[1\]\.pool"),
    ({"width": None}, r"branches\[1\]\.width"),
    ({"propagate": 0}, "at least one branch must propagate"),
])
def test_bad_cellwise_genomes_name_the_field(branch: dict, field: str) -> None:
    space = epnas.spaces.get("cellwise")
    good = {"uid": 1, "type": "conv-none", "src1": 0, "src2": 0, "channels": 16, "width": 3,
            "pool": None, "propagate": 1}
    data = {"format": 1, "space": "cellwise", "options": space.options.model_dump(mode="json"),
            "branches": [{**good, **branch}]}
    with pytest.raises(GenomeError, match=field):
        epnas.load_genome(json.dumps(data))


@pytest.mark.parametrize(("arch", "message"), [
    ("|nor_conv_3x3~0|+|none~0|none~1|", "3 '\\+'-separated"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"ops\[0\] \(edge 0->1\)"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2"),
])
def test_bad_nb201_arch_strings(arch: str, message: str) -> None:
    space = epnas.spaces.get("nb201")
    with pytest.raises(GenomeError, match=message):
        space.from_arch(arch)


def test_bad_space_options_name_the_option() -> None:
    with pytest.raises(epnas.SpaceError, match="channels"):
        epnas.spaces.get("layerwise", channels=(32, 16))
    with pytest.raises(epnas.SpaceError, match="filter_widths"):
        epnas.spaces.get("cellwise", filter_widths=(2, 4))
    with pytest.raises(epnas.SpaceError, match="bogus"):
        epnas.spaces.get("nb201", bogus=3)
