"""Evaluators: real training, reduced-setting proxies, distillation, tabular lookup."""

from epnas.evaluators.base import EVALUATORS, Evaluator
from epnas.evaluators.distill import DistillEvaluator
from epnas.evaluators.supernet import SupernetEvaluator
from epnas.evaluators.synthetic import SyntheticEvaluator
from epnas.evaluators.tabular import TabularEvaluator
from epnas.evaluators.training import TrainingEvaluator

register = EVALUATORS.register
names = EVALUATORS.names
register("distill")(DistillEvaluator)
register("supernet")(SupernetEvaluator)
register("synthetic")(SyntheticEvaluator)
register("tabular")(TabularEvaluator)
register("training")(TrainingEvaluator)

__all__ = ["EVALUATORS", "DistillEvaluator", "Evaluator", "SupernetEvaluator",
           "SyntheticEvaluator",
           "TabularEvaluator", "TrainingEvaluator", "names", "register"]
