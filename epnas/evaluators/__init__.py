"""Evaluators: real training, reduced-setting proxies, tabular lookup."""

from epnas.evaluators.base import EVALUATORS, Evaluator
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.evaluators.tabular import TabularEvaluator

register = EVALUATORS.register
names = EVALUATORS.names
register("synthetic")(SyntheticEvaluator)
register("tabular")(TabularEvaluator)

__all__ = ["EVALUATORS", "Evaluator", "SyntheticEvaluator", "TabularEvaluator", "names",
           "register"]
