"""The sampling options: a FLOPs cap on random genomes that leaves validity alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import epnas
from epnas.errors import SpaceError


@pytest.mark.parametrize("name", epnas.spaces.names())
def test_sampled_genomes_stay_under_the_cap_at_its_input_shape(name: str) -> None:
    free = epnas.spaces.get(name)
    flops = sorted(epnas.cost(free.sample(np.random.default_rng(i)), (1, 28, 28), 10).mflops
                   for i in range(40))
    cap = flops[len(flops) // 3]  # a cap that rejects most random genomes
    capped = epnas.spaces.get(name, sample_max_mflops=cap, sample_input_shape=(1, 28, 28))
    rng = np.random.default_rng(0)
    for _ in range(15):
        genome = capped.sample(rng)
        assert epnas.cost(genome, (1, 28, 28), 10).mflops <= cap
        free.validate(genome)  # an ordinary member of the uncapped space
        assert "sample" not in genome.to_json()


def test_an_impossible_cap_is_one_clear_error() -> None:
    space = epnas.spaces.get("layerwise", sample_max_mflops=1e-4)
    with pytest.raises(SpaceError, match=r"no layerwise genome of at most 0\.0001 MFLOPs"):
        space.sample(np.random.default_rng(0))
    with pytest.raises(SpaceError, match="sample_max_mflops"):
        epnas.spaces.get("layerwise", sample_max_mflops=-1)


def test_sample_command_caps_flops_at_its_input_shape() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "epnas", "sample", "-n", "6", "--max-mflops", "2",
         "--input-shape", "1,28,28", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    genomes = [epnas.load_genome(line) for line in result.stdout.splitlines()]
    assert len(genomes) == 6
    assert all(epnas.cost(g, (1, 28, 28), 10).mflops <= 2 for g in genomes)
    assert all("max_mflops" not in json.loads(line)["options"]
               for line in result.stdout.splitlines())
    bad = subprocess.run([sys.executable, "-m", "epnas", "sample", "--max-mflops", "0.00001"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("epnas: error: no layerwise genome")
    assert "Traceback" not in bad.stderr
