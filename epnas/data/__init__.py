"""Data sets as uint8 tensors: digits, MNIST, Fashion-MNIST, CIFAR-10/100, image folders."""

from epnas.data.datasets import Dataset, DatasetError, load, names

__all__ = ["Dataset", "DatasetError", "load", "names"]
