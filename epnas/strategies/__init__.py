"""Search strategies (ask/tell), registered by name."""

from epnas.strategies.base import STRATEGIES, Strategy, StrategyOptions, get
from epnas.strategies.random import RandomSearch

register = STRATEGIES.register
names = STRATEGIES.names
register("random")(RandomSearch)

__all__ = ["STRATEGIES", "RandomSearch", "Strategy", "StrategyOptions", "get", "names",
           "register"]
