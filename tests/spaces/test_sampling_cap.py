"""The sampling options: a FLOPs range for random genomes that leaves validity alone."""

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


@pytest.mark.parametrize("name", epnas.spaces.names())
def test_sampled_genomes_stay_in_a_flops_range(name: str) -> None:
    free = epnas.spaces.get(name)
    flops = sorted(epnas.cost(free.sample(np.random.default_rng(i)), (1, 28, 28), 10).mflops
                   for i in range(40))
    low, high = flops[len(flops) // 3], flops[2 * len(flops) // 3]
    floor = epnas.spaces.get(name, sample_min_mflops=low, sample_input_shape=(1, 28, 28))
    both = epnas.spaces.get(name, sample_min_mflops=low, sample_max_mflops=high,
                            sample_input_shape=(1, 28, 28))
    rng = np.random.default_rng(1)
    for _ in range(10):
        assert epnas.cost(floor.sample(rng), (1, 28, 28), 10).mflops >= low
        assert low <= epnas.cost(both.sample(rng), (1, 28, 28), 10).mflops <= high


def test_an_empty_range_is_refused_when_the_space_is_made() -> None:
    with pytest.raises(SpaceError, match=r"options: sample_min_mflops \(6\) is above "
                                         r"sample_max_mflops \(5\)$"):
        epnas.spaces.get("layerwise", sample_min_mflops=6, sample_max_mflops=5)
    space = epnas.spaces.get("layerwise", sample_min_mflops=1e6)
    with pytest.raises(SpaceError, match=r"no layerwise genome of at least 1e\+06 MFLOPs"):
        space.sample(np.random.default_rng(0))


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
    ranged = subprocess.run(
        [sys.executable, "-m", "epnas", "sample", "-n", "6", "--min-mflops", "0.5",
         "--max-mflops", "2", "--input-shape", "1,28,28", "--json"],
        capture_output=True, text=True, timeout=120)
    assert ranged.returncode == 0, ranged.stderr
    assert len(ranged.stdout.splitlines()) == 6
    assert all(0.5 <= epnas.cost(epnas.load_genome(line), (1, 28, 28), 10).mflops <= 2
               for line in ranged.stdout.splitlines())
    bad = subprocess.run([sys.executable, "-m", "epnas", "sample", "--max-mflops", "0.00001"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("epnas: error: no layerwise genome")
    assert "Traceback" not in bad.stderr
