"""The static-buffer training step (what a CUDA graph captures) against the eager step:
on CPU uncaptured; on CUDA (``gpu`` marker) captured."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from epnas.data import Dataset, load
from epnas.train import schedules, train
from epnas.train.graphs import GraphedEval, StaticStep, sgd_update
from epnas.train.trainer import evaluate
from tests.train.test_trainer import one_thread  # noqa: F401 (autouse: one torch thread)

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load("digits")


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().cpu() for t in model.state_dict().values()]


def schedule(**overrides: object) -> schedules.Schedule:
    return schedules.get("full", "digits", **{"epochs": 2, "precision": "fp32", **overrides})


def test_the_static_step_is_bit_for_bit_the_eager_step(digits: Dataset) -> None:
    """A power-of-two constant LR makes ``lr * grad`` exact, so the separately rounded
    update of the static step must match SGD's fused one bit for bit."""
    plan = schedule(lr=0.125, final_lr_fraction=1.0, brightness=0.2, cutout=2)
    eager, static = small_cnn(), small_cnn()
    a = train(eager, digits, plan, device="cpu", cuda_graphs="off")
    b = train(static, digits, plan, device="cpu", cuda_graphs="on")
    assert (a.cuda_graphs, b.cuda_graphs) == ("off", "on")
    for x, y in zip(weights(eager), weights(static), strict=True):
        assert torch.equal(x, y)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert a.accuracy == b.accuracy


def test_the_static_step_follows_the_lr_schedule(digits: Dataset) -> None:
    plan = schedule(warmup_epochs=0.5)  # warm-up, then cosine: a new LR every step
    eager, static = small_cnn(), small_cnn()
    a = train(eager, digits, plan, device="cpu")
    b = train(static, digits, plan, device="cpu", cuda_graphs="on")
    assert [r["lr"] for r in a.history] == [r["lr"] for r in b.history]
    for x, y in zip(weights(eager), weights(static), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_update_matches_torch_sgd(nesterov: bool) -> None:
    torch.manual_seed(0)
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    mine = [p.detach().clone().requires_grad_(True) for p in params]

    def sgd(ps: list[torch.Tensor]) -> torch.optim.SGD:
        return torch.optim.SGD([{"params": ps[:1], "weight_decay": 1e-3},
                                {"params": ps[1:], "weight_decay": 0.0}], lr=0.25,
                               momentum=0.9, nesterov=nesterov, foreach=True)

    reference, optimizer = sgd(params), sgd(mine)
    for step in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, mine, grads):
            p.grad, q.grad = g.clone(), g.clone()
        reference.step()
        sgd_update(optimizer, torch.tensor(0.25))
        for p, q in zip(params, mine):
            assert torch.equal(p, q), step
    assert torch.equal(reference.state[params[0]]["momentum_buffer"],
                       optimizer.state[mine[0]]["momentum_buffer"])


def test_modes_on_cpu(digits: Dataset) -> None:
    plan = schedule(epochs=1)
    assert train(small_cnn(), digits, plan, device="cpu", cuda_graphs="auto").cuda_graphs == "off"
    assert train(small_cnn(), digits, plan, device="cpu",
                 cuda_graphs="compile").cuda_graphs == "off"  # reduce-overhead: CUDA only
    with pytest.raises(ValueError, match="cuda_graphs"):
        train(small_cnn(), digits, plan, device="cpu", cuda_graphs="yes")


# --- on a GPU -----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_captured_training_matches_eager_on_cuda(digits: Dataset, precision: str) -> None:
    plan = schedule(epochs=3, precision=precision)
    eager, graphed = small_cnn(), small_cnn()
    a = train(eager, digits, plan, device="cuda", cuda_graphs="off")
    b = train(graphed, digits, plan, device="cuda", cuda_graphs="on")
    assert b.cuda_graphs == "on"
    assert [r["lr"] for r in a.history] == [r["lr"] for r in b.history]
    # same batches and LR: the losses agree to rounding (bf16 and cuDNN's choices)
    tolerance = 1e-2 if precision == "fp32" else 5e-2
    for x, y in zip(a.history, b.history):
        assert y["loss"] == pytest.approx(x["loss"], rel=tolerance)
    assert abs(a.accuracy - b.accuracy) <= 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_replays_draw_the_random_numbers_eager_steps_draw_on_cuda() -> None:
    """The generator is registered with the graph: replays and the eager draws between
    them (each epoch's shuffle) take the same numbers as eager steps. A linear model
    and a power-of-two LR: the two runs agree to cuBLAS's rounding."""
    device = torch.device("cuda")
    data = torch.Generator(device).manual_seed(1)
    x = torch.randn(32, 8, device=device, generator=data)
    y = torch.randint(0, 4, (32,), device=device, generator=data)
    runs = []
    for capture in (False, True):
        torch.manual_seed(0)
        model = nn.Linear(8, 4).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.125, momentum=0.9)
        generator = torch.Generator(device).manual_seed(0)

        def compute(idx: torch.Tensor, model: nn.Module = model,
                    generator: torch.Generator = generator) -> tuple[torch.Tensor, ...]:
            noise = torch.rand(len(idx), 8, device=device, generator=generator)
            logits = model(x[idx] + noise)
            return nn.functional.cross_entropy(logits, y[idx]), logits, y[idx]

        step = StaticStep(model, optimizer, compute, batch_size=16, device=device,
                          capture=capture, generator=generator)
        for _ in range(8):
            order = torch.randperm(32, generator=generator, device=device)
            step.step(order[:16], 0.125)
        torch.cuda.synchronize()
        runs.append((step.mode, weights(model)))
    assert runs[1][0] == "on"
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_captured_evaluation_matches_eager_on_cuda(digits: Dataset) -> None:
    model = small_cnn().cuda().eval()
    plain = evaluate(model, digits.val_x, digits.val_y, digits.mean, digits.std,
                     batch_size=64, precision="fp32")
    graphed = GraphedEval(model, 64, dtype=None, memory_format=torch.channels_last)
    captured = evaluate(model, digits.val_x, digits.val_y, digits.mean, digits.std,
                        batch_size=64, precision="fp32", forward=graphed.logits_of)
    assert graphed.graph is not None
    assert captured[0] == pytest.approx(plain[0]) and captured[1] == pytest.approx(
        plain[1], rel=1e-4)


class Syncing(nn.Module):
    """A network that reads a value on the host in its forward pass: not capturable."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum().item() > float("inf"):
            return x
        return self.inner(x)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_an_uncapturable_network_falls_back_to_eager(digits: Dataset) -> None:
    result = train(Syncing(), digits, schedule(epochs=1), device="cuda", cuda_graphs="on")
    assert result.cuda_graphs == "fallback" and result.status == "done"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_compile_mode_trains_on_cuda(digits: Dataset) -> None:
    result = train(small_cnn(), digits, schedule(epochs=1), device="cuda",
                   cuda_graphs="compile")
    assert result.cuda_graphs in ("compile", "fallback") and result.status == "done"


class _FakeStream:
    def wait_stream(self, other: object) -> None:
        pass


class _UncapturableGraph:
    def register_generator_state(self, generator: torch.Generator) -> None:
        raise RuntimeError("this network cannot be captured")


class _ReplayingGraph:
    """A capture that runs its body once (a real one only records it); each replay after
    the first (which is that captured step) runs the step again."""

    step: StaticStep

    def __init__(self) -> None:
        self.replays = 0

    def register_generator_state(self, generator: torch.Generator) -> None:
        pass

    def replay(self) -> None:
        self.replays += 1
        if self.replays > 1:
            type(self).step()


@pytest.mark.parametrize(("graph", "mode"), [(_UncapturableGraph, "fallback"),
                                             (_ReplayingGraph, "on")])
def test_capture_bookkeeping_keeps_the_steps(monkeypatch: pytest.MonkeyPatch, graph: type,
                                             mode: str) -> None:
    """The capture bookkeeping on CPU (torch.cuda faked): three warm-up steps on a side
    stream, then the capture, then replays (or, when it fails, eager steps): the same
    weights as never capturing."""
    side: list[int] = []
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: side.append(1) or nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "graph", lambda g: nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", graph)
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    runs = []
    for capture in (False, True):
        model = small_cnn()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

        def compute(idx: torch.Tensor, model: nn.Module = model) -> tuple[torch.Tensor, ...]:
            logits = model(x[idx])
            return nn.functional.cross_entropy(logits, y[idx]), logits, y[idx]

        step = StaticStep(model, optimizer, compute, batch_size=16, device=torch.device("cpu"),
                          generator=torch.Generator())
        step.capture = capture  # as on CUDA
        graph.step = step
        for i in range(7):
            step.step(torch.arange(16) + 8 * (i % 4), 0.1 / (i + 1))
        runs.append((step.mode, weights(model), step.loss_sum.item()))
    assert runs[0][0] == "on" and runs[1][0] == mode
    assert len(side) == 3  # the warm-up steps
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)
    assert runs[0][2] == runs[1][2]
