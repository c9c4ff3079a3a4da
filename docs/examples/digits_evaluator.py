"""An evaluator written from scratch: a few epochs of plain PyTorch training on
scikit-learn's 8 x 8 digits; the validation accuracy is what the search maximises.

Use it by its spec, ``docs.examples.digits_evaluator:DigitsEvaluator`` (or register it,
or publish it by entry point).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from epnas.evaluators import Evaluator
from epnas.spaces import Genome, build, cost
from epnas.trial import Candidate, Result


class DigitsEvaluator(Evaluator):
    """Trains each candidate for ``1ep`` or ``3ep`` (epochs) with SGD on 80 % of the
    digits and reports its accuracy on the other 20 %.

    Args:
        lr: SGD learning rate (Nesterov momentum 0.9, cosine decay to 0).
        batch_size: images per step; also the batch of the ``memory`` estimate.
        seed: seeds the split, the initial weights and the shuffling (a study passes
            its ``--seed``).
    """

    fidelities = ("1ep", "3ep")  # what a candidate's fidelity may name
    default_fidelity = "3ep"  # for candidates that name none
    metrics = ("accuracy", "train_seconds")  # reported besides the cost metrics
    input_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, lr: float = 0.05, batch_size: int = 64, seed: int = 0) -> None:
        self.lr, self.batch_size, self.seed = lr, batch_size, seed
        self._data: tuple[torch.Tensor, ...] | None = None

    def prepare(self) -> None:
        """Load the data once per worker, before the first trial."""
        if self._data is None:
            digits = load_digits()
            x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
            y = torch.tensor(digits.target)
            order = torch.tensor(np.random.default_rng(self.seed).permutation(len(y)))
            cut = int(0.8 * len(y))
            train, val = order[:cut], order[cut:]
            self._data = (x[train], y[train], x[val], y[val])

    def costs(self, genome: Genome) -> dict[str, float]:
        """The analytic costs (``memory`` at this evaluator's batch size)."""
        return cost(genome, self.input_shape, self.num_classes).as_dict(self.batch_size)

    def query_cost(self, fidelity: str | None) -> float:
        return self._epochs(fidelity) / 3

    def evaluate(self, candidate: Candidate) -> Result:
        if (candidate.fidelity or self.default_fidelity) not in self.fidelities:
            return Result.failure("error", f"unknown fidelity {candidate.fidelity!r}")
        self.prepare()
        x, y, x_val, y_val = self._data  # type: ignore[misc]
        costs = self.costs(candidate.genome)
        torch.manual_seed(self.seed)
        model = build(candidate.genome, self.input_shape, self.num_classes)
        steps = self._epochs(candidate.fidelity) * math.ceil(len(y) / self.batch_size)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9,
                                    nesterov=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        start = time.perf_counter()
        model.train()
        for _ in range(self._epochs(candidate.fidelity)):
            for batch in torch.randperm(len(y)).split(self.batch_size):
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                if not torch.isfinite(loss):  # a failure is a result, not an exception
                    return Result.failure("diverged", f"loss became {loss.item()}", costs)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        return Result("done", {"accuracy": accuracy, **costs,
                               "train_seconds": time.perf_counter() - start})

    def _epochs(self, fidelity: str | None) -> int:
        return int((fidelity or self.default_fidelity).removesuffix("ep"))
