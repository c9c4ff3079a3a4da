"""Search strategies (ask/tell), registered by name."""

from epnas.strategies.base import STRATEGIES, Strategy, StrategyOptions, get
from epnas.strategies.dna import DNA
from epnas.strategies.econas import EcoNAS
from epnas.strategies.epnas import EPNAS
from epnas.strategies.evolution import RegularizedEvolution
from epnas.strategies.pnas import PNAS
from epnas.strategies.random import RandomSearch
from epnas.strategies.reinforce import Reinforce

register = STRATEGIES.register
names = STRATEGIES.names
register("random")(RandomSearch)
register("epnas")(EPNAS)
register("evolution")(RegularizedEvolution)
register("reinforce")(Reinforce)
register("econas")(EcoNAS)
register("pnas")(PNAS)
register("dna")(DNA)

__all__ = ["DNA", "EPNAS", "PNAS", "STRATEGIES", "EcoNAS", "RandomSearch",
           "RegularizedEvolution", "Reinforce", "Strategy", "StrategyOptions", "get", "names",
           "register"]
