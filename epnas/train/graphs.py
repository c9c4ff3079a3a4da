"""The training step over static buffers, and its capture in a CUDA graph.

A search's candidates are small: on a GPU their training is bound by kernel launches,
not arithmetic (the reference network used 0.3 % of an H200 at batch 128). A CUDA graph
replays a whole step (augmentation, forward, backward, SGD update, the epoch's running
sums) as one launch. It needs every tensor the step reads to live at a fixed address,
so the step reads its batch indices and learning rate from buffers that the trainer
fills before each replay; everything else (the data set, the model, the momentum
buffers, the generator's state) already stays in place.

:class:`StaticStep` is that step. The same code runs on CPU and CUDA, captured or not:
on CPU (and for networks that cannot be captured) it runs eagerly over the same buffers.
The learning rate is a tensor, so the update multiplies by it before adding; eager SGD
fuses the two (``p - lr * g`` rounded once), so the two differ in the last bit unless
the multiplication is exact (an LR that is a power of two). Batches, augmentation and
the LR schedule are the same step for step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

__all__ = ["GRAPH_MODES", "GraphedEval", "StaticStep", "sgd_update"]

GraphMode = Literal["auto", "on", "off", "compile"]
GRAPH_MODES = ("auto", "on", "off", "compile")
# eager steps before capture: cuDNN autotuning, the allocator and the momentum buffers
# settle on them (side stream, as CUDA graph capture requires)
WARMUP_STEPS = 3

log = logging.getLogger(__name__)
# forward over the batch of the given indices -> (loss, logits for accuracy, labels)
Compute = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@torch.no_grad()
def sgd_update(optimizer: torch.optim.SGD, lr: torch.Tensor) -> None:
    """``optimizer``'s SGD step (foreach, weight decay, momentum, Nesterov as its groups
    say) with the learning rate read from the tensor ``lr`` (capturable: no host read).
    The momentum buffers are the optimizer's, so its ``state_dict`` stays valid."""
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        if group.get("maximize") or group.get("dampening", 0.0):
            raise ValueError("sgd_update supports neither maximize nor dampening")
        grads = [p.grad for p in params]
        decay, momentum = group["weight_decay"], group["momentum"]
        if decay != 0:
            grads = torch._foreach_add(grads, params, alpha=decay)
        if momentum != 0:
            states = [optimizer.state[p] for p in params]
            if all(s.get("momentum_buffer") is not None for s in states):
                bufs = [s["momentum_buffer"] for s in states]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            else:
                bufs = []
                for state, grad in zip(states, grads):
                    if state.get("momentum_buffer") is None:
                        state["momentum_buffer"] = grad.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad)
                    bufs.append(state["momentum_buffer"])
            if group["nesterov"]:
                torch._foreach_add_(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, torch._foreach_mul(grads, lr), alpha=-1)


class StaticStep:
    """One SGD training step whose inputs live in buffers: :attr:`idx` (the batch's
    indices into the training set) and :attr:`lr`; it adds the batch's summed loss and
    correct predictions to :attr:`loss_sum` and :attr:`correct`.

    Args:
        model: The network (its parameters are the optimizer's).
        optimizer: A ``torch.optim.SGD``; its gradients are zeroed in place, not freed,
            so they keep their addresses between steps.
        compute: The forward pass of the batch at the given indices (augmentation
            included): ``(loss, logits, labels)``.
        batch_size: Images per step.
        device: Where the buffers live.
        capture: Capture the step in a CUDA graph after :data:`WARMUP_STEPS` eager
            steps (CUDA only); a step that fails to capture runs eagerly from then on.
        generator: The generator the step draws augmentation from, registered with the
            graph so that each replay advances it as an eager step would.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.SGD, compute: Compute, *,
                 batch_size: int, device: torch.device, capture: bool = False,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.optimizer, self.compute = model, optimizer, compute
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.lr = torch.zeros((), device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)  # the last step's loss
        self.capture = capture and device.type == "cuda"
        self.generator = generator
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps = 0
        self.mode = "on"  # "fallback": the capture failed, eager from then on

    def __call__(self) -> None:
        """The step over the buffers, eagerly (also what a capture records)."""
        loss, logits, y = self.compute(self.idx)
        loss.backward()
        sgd_update(self.optimizer, self.lr)
        for group in self.optimizer.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                torch._foreach_zero_(grads)
        self.loss.copy_(loss.detach())
        self.loss_sum.add_(loss.detach() * len(y))
        self.correct.add_((logits.argmax(1) == y).sum())

    def step(self, idx: torch.Tensor, lr: float) -> None:
        """Fill the buffers with this step's indices and learning rate, and run it."""
        self.idx.copy_(idx, non_blocking=True)
        self.lr.fill_(lr)
        if self.graph is not None:
            self.graph.replay()
        elif self.capture and self.steps >= WARMUP_STEPS:
            self._capture()
        elif self.capture:
            self._on_side_stream()
        else:
            self()
        self.steps += 1

    def _on_side_stream(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                self()
        except Exception as exc:  # a network that cannot be captured: eager from here
            log.warning("CUDA graph capture failed, training eagerly: %s: %s",
                        type(exc).__name__, exc)
            self.capture, self.mode = False, "fallback"
            torch.cuda.synchronize()
            self()
            return
        self.graph = graph
        graph.replay()  # capture records without running: this is the step


class GraphedEval:
    """Forward passes for evaluation, captured at ``batch_size`` (a partial batch runs
    eagerly): :meth:`logits_of` is :func:`epnas.train.trainer.evaluate`'s ``forward``.

    One graph per instance, captured at the first full batch (under ``no_grad``); the
    model must stay in eval mode and keep its parameters in place between calls.
    """

    def __init__(self, model: nn.Module, batch_size: int, *, dtype: torch.dtype | None,
                 memory_format: torch.memory_format) -> None:
        self.model, self.batch_size, self.dtype = model, batch_size, dtype
        self.memory_format = memory_format
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.x: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None,
                            cache_enabled=False):
            return self.model(x.contiguous(memory_format=self.memory_format)).float()

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a normalised batch: replayed when it is full and captured."""
        if len(x) != self.batch_size or x.device.type != "cuda" or self.failed:
            return self.forward(x)
        if self.graph is None:
            self._capture(x)
            if self.graph is None:
                return self.forward(x)
        assert self.x is not None and self.logits is not None
        self.x.copy_(x)
        self.graph.replay()
        return self.logits

    def _capture(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.forward(self.x)  # warm-up: cuDNN picks its kernels
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = self.forward(self.x)
        except Exception as exc:
            log.warning("CUDA graph capture of evaluation failed: %s: %s",
                        type(exc).__name__, exc)
            self.failed = True
            torch.cuda.synchronize()
            return
        self.graph = graph
