"""The trainer, its schedules and the batched augmentations, on real (tiny) data."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits
from torch import nn

from epnas.data import Dataset, augment
from epnas.train import Schedule, schedules, train
from epnas.train import trainer as trainer_module


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Train on one thread.

    8x8 images are too small for a second thread to pay, and two OpenMP threads run
    ten times slower whenever another process competes for the cores (parallel test
    runs, a shared CI runner).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8))[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    scaled = x[:1300].float() / 255
    return Dataset(
        name="digits",
        train_x=x[:1300],
        train_y=y[:1300],
        val_x=x[1300:1550],
        val_y=y[1300:1550],
        test_x=x[1550:],
        test_y=y[1550:],
        classes=tuple(str(d) for d in range(10)),
        mean=(scaled.mean().item(),),
        std=(scaled.std().item(),),
    )


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class NanAfter(nn.Module):
    """Wraps a network and returns NaN logits from its ``start``-th training call on."""

    def __init__(self, inner: nn.Module, start: int) -> None:
        super().__init__()
        self.inner, self.start, self.calls = inner, start, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.start:
                return out * math.nan
        return out


# --- the trainer -----------------------------------------------------------------------


def test_learns_digits_well_above_chance(digits: Dataset) -> None:
    schedule = schedules.get("prediction", "digits", stop_epoch=6)
    model = tiny_cnn()
    result = train(model, digits, schedule, evaluate_test=True)
    assert result.status == "done"
    assert result.epochs == 6 and len(result.history) == 6
    assert result.accuracy > 0.9  # chance is 0.1
    assert result.test_accuracy is not None and result.test_accuracy > 0.9
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.images_per_second > 0 and result.train_seconds > 0
    assert result.history[-1]["accuracy"] == result.accuracy
    assert not model.training


@pytest.mark.parametrize("precision", [
    "bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # fp16 is emulated on CPU: ~16 s
def test_each_autocast_precision_trains(digits: Dataset, precision: str) -> None:
    # fp16 runs the loss-scaling (GradScaler) path that CUDA uses for older GPUs.
    schedule = schedules.get("prediction", "digits", stop_epoch=3, precision=precision)
    result = train(tiny_cnn(), digits, schedule)
    assert result.status == "done" and result.accuracy > 0.5


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_result_other_seed_differs(digits: Dataset, threads: int) -> None:
    torch.set_num_threads(threads)  # oneDNN splits work differently per thread count
    schedule = schedules.get("full", "digits", epochs=1)
    a = train(tiny_cnn(), digits, schedule, seed=3)
    b = train(tiny_cnn(), digits, schedule, seed=3)
    c = train(tiny_cnn(), digits, schedule, seed=4)
    assert (a.accuracy, a.loss, a.val_loss) == (b.accuracy, b.loss, b.val_loss)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.loss != c.loss


def test_resuming_a_checkpoint_ends_exactly_where_an_uninterrupted_run_ends(
        digits: Dataset, tmp_path) -> None:
    schedule = schedules.get("full", "digits", epochs=2)
    whole = tiny_cnn()
    reference = train(whole, digits, schedule, seed=5)
    saved: list[dict] = []
    first = tiny_cnn()
    train(first, digits, schedule, seed=5,
          checkpoint=lambda state: saved.append(torch.load(_round_trip(state, tmp_path),
                                                           weights_only=True)))
    assert [s["epoch"] for s in saved] == [1, 2]
    resumed_model = tiny_cnn(seed=9)  # other initial weights: the checkpoint replaces them
    resumed = train(resumed_model, digits, schedule, seed=5, resume=saved[0])
    assert resumed.epochs == 2 and len(resumed.history) == 2
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history]
    assert resumed.accuracy == reference.accuracy
    for (name, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def _round_trip(state: dict, tmp_path) -> str:
    """Save a checkpoint as a caller would, so the test reads what torch.load gives back."""
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return str(path)


def test_caller_rng_state_is_left_alone(digits: Dataset) -> None:
    model = tiny_cnn()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, digits, schedules.get("full", "digits", epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_nan_loss_stops_promptly_as_diverged(digits: Dataset) -> None:
    model = NanAfter(tiny_cnn(), start=3)
    # on CPU: CUDA reads the loss every 16 steps, not to stall the GPU's queue
    result = train(model, digits, schedules.get("full", "digits", epochs=5), device="cpu")
    assert result.status == "diverged"
    assert model.calls == 3  # stopped at the first non-finite loss
    assert result.epochs == 0 and result.history == ()
    assert result.accuracy == 0.0 and not math.isfinite(result.loss)


def test_huge_learning_rate_diverges(digits: Dataset) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # no BN to absorb the blow-up
    schedule = schedules.get("full", "digits", lr=1e30, epochs=3, precision="fp32")
    result = train(model, digits, schedule)
    assert result.status == "diverged"
    assert result.epochs == 0


def test_time_limit_stops_with_a_measured_model(digits: Dataset) -> None:
    result = train(tiny_cnn(), digits, schedules.get("full", "digits"), time_limit=0.0)
    assert result.status == "timeout"
    assert result.epochs == 0
    assert 0.0 <= result.accuracy <= 1.0 and math.isfinite(result.val_loss)


def test_progress_and_history_per_epoch(digits: Dataset) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    schedule = schedules.get(
        "full", "digits", epochs=4, eval_every=2, precision="fp32", channels_last=False
    )
    result = train(tiny_cnn(), digits, schedule, progress=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert ["accuracy" in m for _, m in seen] == [False, True, False, True]
    assert [m["epoch"] for m in result.history] == [1.0, 2.0, 3.0, 4.0]
    # The LR is set per step: the last step of epoch e sits half a step before e.
    steps = len(digits.train_y) // schedule.batch_size
    for m in result.history:
        assert m["lr"] == pytest.approx(schedule.lr_at(m["epoch"] - 0.5 / steps))
    assert result.test_accuracy is None


# --- schedules -------------------------------------------------------------------------


def test_presets_follow_the_paper() -> None:
    full, prediction = schedules.get("full"), schedules.get("prediction")
    assert (full.epochs, full.batch_size, full.nesterov, full.decay) == (20, 128, True, "cosine")
    # the paper's LR 0.5 at batch 1024, scaled linearly to a CPU-sized batch
    assert prediction.lr == pytest.approx(0.5 * prediction.batch_size / 1024)
    assert (prediction.batch_size, prediction.train_epochs) == (256, 4)
    assert prediction.train_epochs <= full.epochs / 4  # at least 4x cheaper
    assert prediction.lr_at(prediction.train_epochs) < 0.05 * prediction.lr  # aggressive
    assert prediction.crop_padding == schedules.get("prediction", "cifar10").crop_padding == 0
    assert schedules.names() == ["full", "prediction"]


def test_overrides_validate() -> None:
    assert schedules.get("full", epochs=3, cutout=0).epochs == 3
    with pytest.raises(ValidationError, match="epoch_count"):
        schedules.get("full", epoch_count=3)
    with pytest.raises(ValidationError, match="batch_size"):
        schedules.get("full", batch_size=0)
    with pytest.raises(ValidationError, match="nesterov"):
        schedules.get("full", momentum=0.0)
    with pytest.raises(ValidationError, match="stop_epoch"):
        schedules.get("prediction", stop_epoch=30)
    with pytest.raises(ValidationError):
        schedules.get("full", precision="int8")
    with pytest.raises(schedules.ScheduleError, match="unknown schedule 'fast'"):
        schedules.get("fast")
    with pytest.raises(ValidationError, match="frozen"):
        schedules.get("full").epochs = 3  # type: ignore[misc]


def test_batch_override_scales_lr_linearly_unless_lr_given() -> None:
    assert schedules.get("full", batch_size=256).lr == pytest.approx(0.2)
    assert schedules.get("full", batch_size=256, lr=0.05).lr == 0.05
    assert schedules.get("prediction", "digits", batch_size=64).lr == pytest.approx(
        schedules.get("prediction", "digits").lr / 2
    )


def test_dataset_defaults(digits: Dataset) -> None:
    on_digits = schedules.get("full", "digits")
    assert not on_digits.flip and on_digits.crop_padding == 1
    assert schedules.get("full", "fashion-mnist").flip
    assert schedules.get("full", "mnist").flip is False
    assert schedules.get("prediction", "digits").batch_size < len(digits.train_y) / 4
    assert schedules.get("prediction", "digits").cutout == 0
    # An unnamed data set is adapted from its shape and size, LR scaled with the batch.
    mine = dataclasses.replace(digits, name="mine")
    other = schedules.get("prediction", mine)
    assert schedules.get("full", mine).crop_padding == 1 and other.crop_padding == 0
    assert other.batch_size == 128
    assert other.lr == pytest.approx(0.5 * 128 / 1024)
    assert schedules.get("full", "digits", flip=True).flip


def test_warmup_is_linear() -> None:
    s = Schedule(epochs=10, lr=0.4, warmup_epochs=2.0)
    assert s.lr_at(0.0) == 0.0
    assert s.lr_at(1.0) == pytest.approx(0.2)
    assert s.lr_at(2.0) == pytest.approx(0.4)


@pytest.mark.parametrize("decay", ["cosine", "linear", "exponential", "step"])
def test_decay_falls_monotonically_to_the_final_fraction(decay: str) -> None:
    s = Schedule(epochs=10, lr=0.4, warmup_epochs=1.0, decay=decay, final_lr_fraction=0.01)
    lrs = [s.lr_at(e / 10) for e in range(10, 101)]
    assert lrs[0] == pytest.approx(0.4)
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert s.lr_at(10.0) == pytest.approx(0.004)


def test_cosine_and_exponential_shapes() -> None:
    cosine = Schedule(epochs=10, lr=1.0, final_lr_fraction=0.1)
    assert cosine.lr_at(5.0) == pytest.approx(0.55)  # halfway between peak and floor
    exponential = Schedule(epochs=10, lr=1.0, decay="exponential", final_lr_fraction=0.01)
    assert exponential.lr_at(5.0) == pytest.approx(0.1)  # geometric: sqrt(0.01)
    step = Schedule(epochs=10, lr=1.0, decay="step", final_lr_fraction=0.01)
    assert step.lr_at(5.1) == step.lr_at(5.9) == pytest.approx(0.1)
    assert step.lr_at(6.0) < step.lr_at(5.9)


# --- augmentation ----------------------------------------------------------------------


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augmentations_keep_shape_dtype_and_are_seeded() -> None:
    x = torch.randint(0, 256, (32, 3, 12, 10), dtype=torch.uint8, generator=gen(9))
    f = x.float() / 255
    cases = [
        (lambda g: augment.random_crop(x, 3, g), torch.uint8),
        (lambda g: augment.random_flip(x, g), torch.uint8),
        (lambda g: augment.jitter_brightness(f, 0.3, g), torch.float32),
        (lambda g: augment.jitter_contrast(f, 0.3, g), torch.float32),
        (lambda g: augment.cutout(f, 4, g), torch.float32),
    ]
    for fn, dtype in cases:
        a, b, c = fn(gen(1)), fn(gen(1)), fn(gen(2))
        assert a.shape == x.shape and a.dtype == dtype
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_crop_shifts_content_within_the_padding() -> None:
    x = torch.zeros(200, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255  # one bright pixel in the centre
    out = augment.random_crop(x, 2, gen())
    shifts = set()
    for img in out:
        rows, cols = torch.nonzero(img[0], as_tuple=True)
        assert len(rows) == 1  # the pixel stays inside: padding 2 < 4
        shifts.add((int(rows[0]) - 4, int(cols[0]) - 4))
    assert shifts == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert augment.random_crop(x, 0, gen()) is x


def test_flip_mirrors_about_half_the_images() -> None:
    x = torch.arange(64 * 2 * 3 * 5, dtype=torch.float32).view(64, 2, 3, 5)
    out = augment.random_flip(x, gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped ^ kept).all())
    assert 16 < int(flipped.sum()) < 48


def test_cutout_zeros_one_square_across_channels() -> None:
    x = torch.ones(100, 3, 16, 16)
    out = augment.cutout(x, 5, gen())
    full_squares = 0
    for img in out:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows = torch.nonzero(zero[0].any(1)).flatten()
        cols = torch.nonzero(zero[0].any(0)).flatten()
        assert 1 <= len(rows) <= 5 and 1 <= len(cols) <= 5
        assert int(zero[0].sum()) == len(rows) * len(cols)  # a rectangle
        assert rows.max() - rows.min() + 1 == len(rows)  # contiguous
        full_squares += int(zero[0].sum()) == 25
    assert full_squares > 50  # squares clip only near a border
    assert augment.cutout(x, 0, gen()) is x


def test_colour_jitter_stays_in_range_and_keeps_the_mean_grey() -> None:
    x = torch.rand(64, 3, 8, 8, generator=gen(5)) * 0.45 + 0.25  # 1.4 * 0.7 < 1
    bright = augment.jitter_brightness(x, 0.4, gen())
    ratio = (bright / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor
    assert bool(((ratio[:, 0] >= 0.6) & (ratio[:, 0] <= 1.4)).all())
    contrast = augment.jitter_contrast(x, 0.4, gen())
    assert contrast.min() >= 0.0 and contrast.max() <= 1.0
    # Factors below 1.4 cannot push values from [0.25, 0.7] out of [0, 1]: no clipping,
    # so each image's mean is unchanged.
    assert torch.allclose(contrast.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)


def test_shorter_epochs_cap_the_prediction_early_stop() -> None:
    from epnas.train import schedules

    short = schedules.get("prediction", epochs=4)
    assert (short.epochs, short.stop_epoch, short.train_epochs) == (4, 4, 4)
    assert schedules.get("prediction", epochs=15).stop_epoch == 4
    assert schedules.get("prediction", epochs=4, stop_epoch=2).stop_epoch == 2


def test_cpu_precision_follows_one_measurement_per_machine(tmp_path, monkeypatch) -> None:
    """`auto` takes bf16 on CPU only where it measured faster; the measurement is kept in
    the cache so every process of a run (workers, a resume) agrees on the precision."""
    from epnas.train import trainer

    monkeypatch.setenv("EPNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    measured = []

    def measure(value: float):
        def fake() -> float:
            measured.append(value)
            return value
        return fake

    cpu = torch.device("cpu")
    try:
        monkeypatch.setattr(trainer, "_measure_bf16_speedup", measure(2.0))
        trainer.cpu_bf16_speedup.cache_clear()
        assert trainer.autocast_dtype("auto", cpu) == torch.bfloat16
        # another process finds the record and does not measure (nor decide) again
        trainer.cpu_bf16_speedup.cache_clear()
        monkeypatch.setattr(trainer, "_measure_bf16_speedup", measure(0.5))
        assert trainer.autocast_dtype("auto", cpu) == torch.bfloat16 and measured == [2.0]
        # a record of another machine or torch is measured anew
        record = tmp_path / "cpu-bf16.json"
        record.write_text('{"key": "another machine", "speedup": 3.0}')
        trainer.cpu_bf16_speedup.cache_clear()
        assert trainer.autocast_dtype("auto", cpu) is None and measured == [2.0, 0.5]
        assert "another" not in record.read_text()
        assert trainer.autocast_dtype("fp32", cpu) is None
        assert trainer.autocast_dtype("bf16", cpu) == torch.bfloat16
    finally:
        trainer.cpu_bf16_speedup.cache_clear()


def page_faults_per_image(train_fn) -> float:
    """Minor page faults per training image of a second epoch on 28x28 images, whose
    activations (a few MB a batch) glibc serves with mmap by default."""
    import resource

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1024, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (1024,), generator=g)
    data = Dataset(name="noise", train_x=x, train_y=y, val_x=x[:64], val_y=y[:64],
                   test_x=x[:64], test_y=y[:64], classes=tuple("0123456789"),
                   mean=(0.5,), std=(0.29,))
    schedule = Schedule(epochs=1, batch_size=128, crop_padding=0, flip=False)
    model = tiny_cnn()
    train_fn(model, data, schedule)  # the first epoch grows the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_fn(model, data, schedule)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(y)


@pytest.mark.skipif(not trainer_module.keep_freed_memory(), reason="needs Linux with glibc")
def test_training_steps_reuse_freed_memory_instead_of_faulting_in_new_pages() -> None:
    """glibc's defaults unmap a batch's freed activations and fault them in again at
    every step (over 100 page faults per image measured on Fashion-MNIST)."""
    assert page_faults_per_image(train) < 5


def test_the_allocator_is_left_alone_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPNAS_MALLOC", "default")
    trainer_module.keep_freed_memory.cache_clear()
    try:
        assert trainer_module.keep_freed_memory() is False
    finally:
        monkeypatch.delenv("EPNAS_MALLOC")
        trainer_module.keep_freed_memory.cache_clear()
        trainer_module.keep_freed_memory()
