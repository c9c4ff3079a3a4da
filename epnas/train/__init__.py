"""Training: the loop (:func:`train`) and its hyper-parameters (:class:`Schedule`)."""

from epnas.train import schedules
from epnas.train.schedules import Schedule
from epnas.train.trainer import TrainResult, evaluate, train

__all__ = ["Schedule", "TrainResult", "evaluate", "schedules", "train"]
