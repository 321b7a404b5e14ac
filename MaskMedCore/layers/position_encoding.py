"""Sine positional encoding of a 2D or 3D grid (DETR/Mask2Former's ``PositionEmbeddingSine``, extended to 3D).

Each axis gets an even share of the channels; coordinates are voxel centres normalised to
(0, 1) and scaled by 2*pi, so the encoding of a location is the same at every resolution level
(which the FSAD-Transformer relies on: levels are spatially aligned, MaskMed §3.3). A 2D grid is
DETR's encoding with centre-normalised coordinates: channels [y | x], half each.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _axis_channels(dim: int, axes: int) -> tuple[int, ...]:
    """Even channel counts per axis, in array order, summing to ``dim``; the last axis takes the remainder."""
    if axes not in (2, 3):
        raise ValueError(f"sine encoding is for 2 or 3 axes, got {axes}")
    if dim % 2 or dim < 2 * axes:
        raise ValueError(f"{axes}D sine encoding needs an even dim >= {2 * axes}, got {dim}")
    per = 2 * (dim // (2 * axes))
    return (per,) * (axes - 1) + (dim - (axes - 1) * per,)


def _encode_axis(size: int, channels: int, device: torch.device, temperature: float) -> Tensor:
    """(size, channels): sin on even, cos on odd channels of ``(i + 0.5) / size * 2 pi``."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 * math.pi
    j = torch.arange(channels, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / channels)
    angles = coords[:, None] / freq[None, :]
    return torch.where(j[None, :] % 2 == 0, angles.sin(), angles.cos())


def sine_position_encoding(
    spatial: tuple[int, ...], dim: int, device: torch.device | None = None, temperature: float = 10000.0
) -> Tensor:
    """Positional encoding of every voxel (pixel) of a (D, H, W) or (H, W) grid, flattened in array order.

    Args:
        spatial: grid size (D, H, W) or (H, W).
        dim: channels C (even, >= 2 per axis).
        device: device of the result.
        temperature: frequency base (DETR: 10000).

    Returns:
        (prod(spatial), C) float32, channels ordered by axis in array order: [z | y | x] or [y | x].

    Raises:
        ValueError: if ``spatial`` does not have 2 or 3 axes or ``dim`` cannot be split evenly.
    """
    spatial = tuple(int(s) for s in spatial)
    n = len(spatial)
    channels = _axis_channels(dim, n)
    device = device or torch.device("cpu")
    parts = []
    for axis, (size, c) in enumerate(zip(spatial, channels, strict=True)):
        # (size, c) -> (1, .., size, .., 1, c) broadcast over the grid
        view = [1] * n + [c]
        view[axis] = size
        parts.append(_encode_axis(size, c, device, temperature).view(view).expand(*spatial, c))
    return torch.cat(parts, dim=-1).reshape(math.prod(spatial), dim)


def sine_position_encoding_3d(
    spatial: tuple[int, int, int], dim: int, device: torch.device | None = None, temperature: float = 10000.0
) -> Tensor:
    """:func:`sine_position_encoding` of a (D, H, W) grid: (D*H*W, C), channels [z | y | x] (dim even, >= 6)."""
    if len(spatial) != 3:
        raise ValueError(f"sine_position_encoding_3d takes a (D, H, W) grid, got {tuple(spatial)}")
    return sine_position_encoding(spatial, dim, device, temperature)
