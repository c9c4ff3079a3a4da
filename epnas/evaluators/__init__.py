"""Evaluators: real training, reduced-setting proxies, tabular lookup."""

from epnas.evaluators.base import EVALUATORS, Evaluator
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.evaluators.tabular import TabularEvaluator
from epnas.evaluators.training import TrainingEvaluator

register = EVALUATORS.register
names = EVALUATORS.names
register("synthetic")(SyntheticEvaluator)
register("tabular")(TabularEvaluator)
register("training")(TrainingEvaluator)

__all__ = ["EVALUATORS", "Evaluator", "SyntheticEvaluator", "TabularEvaluator",
           "TrainingEvaluator", "names", "register"]
