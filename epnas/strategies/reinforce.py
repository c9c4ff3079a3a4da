"""Plain (non-progressive) REINFORCE, the NAS-Bench-201 paper's RL baseline.

One categorical distribution per token of ``space.encode`` (for ``nb201``: one per edge
over its ops), each restricted to the tokens the space allows after those drawn before
it (:meth:`~epnas.spaces.base.Space.next_tokens`: on ``multistage`` a resolution first,
then each stage's blocks, empty slots only at its end), so every sequence decodes. Every
candidate is sampled from scratch; after each result the logits take one Adam step on
``-(R - b) * log p(tokens)``, with a moving-average baseline
``b <- decay * b + (1 - decay) * R`` started at the first reward.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from epnas.spaces.base import Space
from epnas.strategies.base import Strategy, StrategyOptions
from epnas.trial import Candidate, Result


class ReinforceOptions(StrategyOptions):
    lr: float = Field(0.01, gt=0)  # Adam learning rate on the logits
    baseline_decay: float = Field(0.95, ge=0, lt=1)  # moving-average baseline
    fidelity: str | None = None  # evaluator fidelity (None: the evaluator's default)


class Reinforce(Strategy):
    """Categoricals over a fixed-length encoding, limited to the tokens the space allows
    next, trained with REINFORCE."""

    Options = ReinforceOptions
    options: ReinforceOptions
    # the built-in spaces whose fixed-length encodings say which tokens may come next
    supported_spaces = ("nb201", "multistage")

    @classmethod
    def supports(cls, space: Space) -> bool:
        return space.next_tokens([]) is not None

    def __init__(self, space: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        positions = len(space.encode(space.sample(self.rng)))
        self.logits = torch.zeros(positions, space.vocab_size, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=self.options.lr)
        self.baseline: float | None = None
        self.asked = 0

    def _masks(self, tokens: list[int]) -> torch.Tensor:
        """``[positions, vocab]``: True where a token may stand, after ``tokens`` before it."""
        masks = torch.zeros(self.logits.shape, dtype=torch.bool)
        for i in range(len(masks)):
            masks[i, list(self.space.next_tokens(tokens[:i]))] = True
        return masks

    def ask(self) -> Candidate:
        logits = self.logits.detach()
        tokens: list[int] = []
        for row in logits:
            allowed = list(self.space.next_tokens(tokens))
            p = torch.softmax(row[allowed], dim=-1).double().numpy()
            tokens.append(allowed[int(self.rng.choice(len(p), p=p / p.sum()))])
        self.asked += 1
        return Candidate(self.space.decode(tokens), self.options.fidelity,
                         {"index": self.asked, "tokens": tokens})

    def tell(self, candidate: Candidate, result: Result) -> None:
        reward = float(result.reward if result.reward is not None else result.accuracy)
        if self.baseline is None:
            self.baseline = reward
        tokens = torch.tensor(candidate.info["tokens"])
        logits = self.logits.masked_fill(~self._masks(candidate.info["tokens"]), -torch.inf)
        log_prob = torch.log_softmax(logits, dim=-1)[torch.arange(len(tokens)), tokens]
        loss = -(reward - self.baseline) * log_prob.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        decay = self.options.baseline_decay
        self.baseline = decay * self.baseline + (1 - decay) * reward

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng_state(), "logits": self.logits.detach().clone(),
                "optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
                "asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_rng_state(state["rng"])
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline, self.asked = state["baseline"], state["asked"]
