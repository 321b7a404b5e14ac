"""Intensity augmentation on the training device (nnU-Net v2's batchgeneratorsv2 intensity transforms).

Each function takes its random parameters as arguments (drawn by ``Augmenter``) so it is
deterministic and testable on its own. They work on one channel ``(D, H, W)`` or one sample
``(C, D, H, W)`` as documented, compute in float32 and return a new tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1D Gaussian, truncated at 3 sigma (at least 3 taps)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian smoothing of the last three dims, replicate padding.

    Args:
        x: (N, C, D, H, W) float.
        sigmas: (D, H, W) sigmas in voxels; an axis with sigma <= 0 is left alone.

    Returns:
        (N, C, D, H, W) float32.
    """
    N, C = x.shape[:2]
    out = x.float()
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        k = _gaussian_kernel(float(sigma), x.device)
        r = (k.numel() - 1) // 2
        shape = [1, 1, 1]
        shape[axis] = k.numel()
        weight = k.view(1, 1, *shape).expand(C, 1, *shape)
        pad = [0, 0, 0, 0, 0, 0]  # F.pad order: (W_lo, W_hi, H_lo, H_hi, D_lo, D_hi)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=C)
    return out


def add_gaussian_noise(image: torch.Tensor, variance: float, generator: torch.Generator) -> torch.Tensor:
    """``image + N(0, variance)`` with one variance for all channels.

    Args:
        image: (C, D, H, W) float.
        variance: noise variance.
        generator: generator on ``image.device``.
    """
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=torch.float32)
    return image.float() + noise * math.sqrt(variance)


def gaussian_blur(channel: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Blur one channel (D, H, W) with per-axis sigmas (D, H, W) in voxels."""
    return gaussian_smooth(channel[None, None], sigmas)[0, 0]


def adjust_contrast(channel: torch.Tensor, factor: float, preserve_range: bool) -> torch.Tensor:
    """Scale one channel (D, H, W) around its mean by ``factor``, optionally clipped to its [min, max]."""
    x = channel.float()
    out = (x - x.mean()) * factor + x.mean()
    if preserve_range:
        out = out.clamp(x.min(), x.max())
    return out


def simulate_low_resolution(channel: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """Downsample one channel (D, H, W) by per-axis ``scales`` (nearest), then upsample back (trilinear)."""
    size = channel.shape
    small = [max(1, round(n * s)) for n, s in zip(size, scales)]
    if list(small) == list(size):
        return channel.float()
    down = F.interpolate(channel[None, None].float(), size=small, mode="nearest-exact")
    return F.interpolate(down, size=list(size), mode="trilinear", align_corners=False)[0, 0]


def gamma_transform(channel: torch.Tensor, gamma: float, invert: bool, retain_stats: bool) -> torch.Tensor:
    """Gamma on one channel (D, H, W) rescaled to [0, 1]: ``((x - min) / range) ** gamma * range + min``.

    Args:
        channel: (D, H, W) float.
        gamma: exponent (> 0).
        invert: apply gamma to ``-x`` and negate back (nnU-Net's inverted-image gamma).
        retain_stats: restore the original mean and standard deviation afterwards.
    """
    x = -channel.float() if invert else channel.float()
    mean, std = x.mean(), x.std(correction=0)
    lo = x.min()
    span = x.max() - lo + 1e-7
    out = ((x - lo) / span).pow(gamma) * span + lo
    if retain_stats:
        out = (out - out.mean()) / (out.std(correction=0) + 1e-8) * std + mean
    return -out if invert else out
