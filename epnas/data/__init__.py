"""Data sets as uint8 tensors: digits, MNIST, Fashion-MNIST, CIFAR-10/100, image folders,
and the user's own tensors or torch Dataset."""

from epnas.data.custom import as_dataset, from_tensors, from_torch
from epnas.data.datasets import Dataset, DatasetError, load, locate, names

__all__ = ["Dataset", "DatasetError", "as_dataset", "from_tensors", "from_torch", "load",
           "locate", "names"]
