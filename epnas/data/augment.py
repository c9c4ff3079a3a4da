"""Batched data augmentation on the training device.

Each function transforms a whole batch ``[N, C, H, W]`` at once with tensor indexing
and broadcasting (no Python loop over images), drawing its randomness from the given
``torch.Generator``, which must live on the batch's device: the same generator state
gives the same output. Cropping and flipping work on any dtype, uint8 included, so the
trainer runs them before converting to float; brightness and contrast expect floats
in [0, 1]; Cutout is meant for the normalised batch, where 0 is the mean colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cutout", "jitter_brightness", "jitter_contrast", "random_crop", "random_flip"]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad every image by ``padding`` pixels, then crop it back at a random offset.

    Args:
        x: Batch ``[N, C, H, W]``.
        padding: Pixels added on each side; the content shifts by up to this much.
        generator: Source of the offsets, on ``x.device``.

    Returns:
        A batch of the same shape and dtype, in channels-last memory layout.
    """
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator, device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # [N, H] source rows of each image
    cols = dx + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dims first: [N, H, W, C]; the permuted
    # view is NCHW-shaped with channels-last strides, which the network wants anyway.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _factors(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """One factor per image drawn from [1 - strength, 1 + strength], shaped to broadcast."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)
    return 1.0 + strength * (2.0 * u - 1.0)


def jitter_brightness(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each image's intensities by a random factor in [1-s, 1+s], clipped to [0, 1].

    Args:
        x: Float batch with values in [0, 1].
        strength: Maximum relative change, in [0, 1).
        generator: Source of the factors, on ``x.device``.
    """
    return (x * _factors(x, strength, generator)).clamp_(0.0, 1.0)


def jitter_contrast(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each image's deviation from its mean by a random factor in [1-s, 1+s].

    The mean is taken over all channels and pixels of the image (a grey level), so
    hues are kept; results are clipped to [0, 1].

    Args:
        x: Float batch with values in [0, 1].
        strength: Maximum relative change, in [0, 1).
        generator: Source of the factors, on ``x.device``.
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(mean, x, _factors(x, strength, generator)).clamp_(0.0, 1.0)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square, all channels, centred at a random pixel of each image.

    As in DeVries & Taylor (2017), the centre is uniform over the image, so squares
    near a border are clipped by it.

    Args:
        x: Batch ``[N, C, H, W]``, normally already normalised.
        size: Side of the square in pixels; 0 returns ``x`` unchanged.
        generator: Source of the centres, on ``x.device``.
    """
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n, 1), generator=generator, device=x.device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)  # [N, H]
    in_cols = (cols >= left) & (cols < left + size)  # [N, W]
    return x.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0)
