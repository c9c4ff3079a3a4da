"""Evaluators: real training, reduced-setting proxies, tabular lookup."""

from epnas.evaluators.base import EVALUATORS, Evaluator

register = EVALUATORS.register
names = EVALUATORS.names

__all__ = ["EVALUATORS", "Evaluator", "names", "register"]
