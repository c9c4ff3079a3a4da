"""The reward surrogate PNAS ranks expansions with and EPNAS's critic screens proposals
with: an ensemble of small MLPs over one-hot features of ``space.encode``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from epnas.spaces.base import Space
from epnas.spaces.genome import Genome


class Surrogate:
    """An ensemble of one-hidden-layer MLPs, trained together by full-batch Adam.

    Plain numpy with hand-written gradients: the nets are tiny and are refit every
    round, where torch's or scikit-learn's per-step overhead costs ~10x the arithmetic.

    Args:
        members: MLPs, each from its own random initial weights; the prediction is
            their mean.
        hidden: hidden units per MLP.
        steps: Adam steps per fit (on the whole data, MSE on standardised targets).
        lr: Adam learning rate.
        weight_decay: L2 penalty on the weights.
        seed: seeds the initial weights.
    """

    def __init__(self, members: int = 5, hidden: int = 64, steps: int = 100,
                 lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> None:
        self.members, self.hidden, self.steps = members, hidden, steps
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self.params: list[np.ndarray] = []
        self.columns = np.zeros(0, dtype=bool)
        self.mean, self.std = 0.0, 1.0

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w1, b1, w2, b2 = self.params
        z = x @ w1 + b1  # [members, N, hidden]
        return (np.maximum(z, 0) @ w2 + b2)[..., 0], z

    def fit(self, x: np.ndarray, y: np.ndarray) -> Surrogate:
        self.columns = x.std(0) > 0  # a constant feature carries nothing to learn
        x = x[:, self.columns].astype(np.float32)
        self.mean, self.std = float(np.mean(y)), float(np.std(y)) or 1.0
        target = ((np.asarray(y) - self.mean) / self.std).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        e, d, h = self.members, x.shape[1], self.hidden

        def uniform(*shape: int, bound: float) -> np.ndarray:
            return rng.uniform(-bound, bound, shape).astype(np.float32)

        self.params = [uniform(e, d, h, bound=max(d, 1) ** -0.5), np.zeros((e, 1, h), np.float32),
                       uniform(e, h, 1, bound=h ** -0.5), np.zeros((e, 1, 1), np.float32)]
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in self.params]
        with threadpool_limits(1):  # tiny matrices: BLAS threads only contend
            self._adam(x, target, moments)
        return self

    def _adam(self, x: np.ndarray, target: np.ndarray,
              moments: list[tuple[np.ndarray, np.ndarray]]) -> None:
        beta1, beta2, n = 0.9, 0.999, len(x)
        for step in range(1, self.steps + 1):
            w1, _, w2, _ = self.params
            out, z = self._forward(x)
            g_out = (2 / n) * (out - target)[..., None]  # [members, N, 1]
            a = np.maximum(z, 0)
            g_z = (g_out @ w2.transpose(0, 2, 1)) * (z > 0)
            grads = [x.T @ g_z + self.weight_decay * w1, g_z.sum(1, keepdims=True),
                     a.transpose(0, 2, 1) @ g_out + self.weight_decay * w2,
                     g_out.sum(1, keepdims=True)]
            for p, g, (m, v) in zip(self.params, grads, moments):
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                p -= (self.lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                      * m / (np.sqrt(v) + 1e-8))

    def predict(self, x: np.ndarray, optimism: float = 0.0) -> np.ndarray:
        """The ensemble's mean prediction plus ``optimism`` times its members' standard
        deviation (an upper confidence bound), in the units of the fitted targets."""
        out, _ = self._forward(x[:, self.columns].astype(np.float32))
        bound = out.mean(0) + optimism * out.std(0) if optimism else out.mean(0)
        return bound * self.std + self.mean


class Encoder:
    """One-hot features of ``space.encode``: one block per token position, padded.

    Args:
        space: the space whose token lists are encoded.
        positions: token positions kept (longer lists are cut); None: a cellwise
            space's fixed maximum, else the length of a sampled genome's list.
        counts: add how often each token occurs (the whole list, so a cut or
            differently aligned list of a variable-length space still counts).
    """

    def __init__(self, space: Space, positions: int | None = None, counts: bool = False) -> None:
        self.space = space
        if positions is None:
            units = getattr(space.options, "max_branches", None)  # cellwise: fixed maximum
            sample = space.encode(space.sample(np.random.default_rng(0)))
            positions = units * len(space.token_fields) if units else len(sample)
        self.positions, self.counts = positions, counts
        self.width = space.vocab_size + 1  # the last id pads short cells

    def __call__(self, genomes: Sequence[Genome]) -> np.ndarray:
        return self.tokens([self.space.encode(g) for g in genomes])

    def tokens(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Features of ``space.encode`` token lists."""
        ids = np.full((len(rows), self.positions), self.width - 1)
        for i, tokens in enumerate(rows):
            kept = list(tokens)[: self.positions]
            ids[i, : len(kept)] = kept
        features = np.eye(self.width, dtype=np.float32)[ids].reshape(len(rows), -1)
        if not self.counts:
            return features
        bag = np.zeros((len(rows), self.width - 1), dtype=np.float32)
        for i, tokens in enumerate(rows):
            np.add.at(bag[i], np.asarray(tokens, dtype=int), 1.0)
        return np.concatenate([features, bag], axis=1)
