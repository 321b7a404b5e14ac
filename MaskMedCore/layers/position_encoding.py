"""3D sine positional encoding (DETR/Mask2Former's ``PositionEmbeddingSine`` extended to 3D).

Each axis gets an even share of the channels; coordinates are voxel centres normalised to
(0, 1) and scaled by 2*pi, so the encoding of a location is the same at every resolution level
(which the FSAD-Transformer relies on: levels are spatially aligned, MaskMed §3.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _axis_channels(dim: int) -> tuple[int, int, int]:
    """Even channel counts (z, y, x) summing to ``dim``."""
    if dim % 2 or dim < 6:
        raise ValueError(f"3D sine encoding needs an even dim >= 6, got {dim}")
    per = 2 * (dim // 6)
    return per, per, dim - 2 * per


def _encode_axis(size: int, channels: int, device: torch.device, temperature: float) -> Tensor:
    """(size, channels): sin on even, cos on odd channels of ``(i + 0.5) / size * 2 pi``."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 * math.pi
    j = torch.arange(channels, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / channels)
    angles = coords[:, None] / freq[None, :]
    return torch.where(j[None, :] % 2 == 0, angles.sin(), angles.cos())


def sine_position_encoding_3d(
    spatial: tuple[int, int, int], dim: int, device: torch.device | None = None, temperature: float = 10000.0
) -> Tensor:
    """Positional encoding of every voxel of a (D, H, W) grid, flattened in array order.

    Args:
        spatial: grid size (D, H, W).
        dim: channels C (even, >= 6).
        device: device of the result.
        temperature: frequency base (DETR: 10000).

    Returns:
        (D*H*W, C) float32, channels ordered [z | y | x].
    """
    D, H, W = spatial
    cz, cy, cx = _axis_channels(dim)
    device = device or torch.device("cpu")
    pz = _encode_axis(D, cz, device, temperature)[:, None, None, :].expand(D, H, W, cz)
    py = _encode_axis(H, cy, device, temperature)[None, :, None, :].expand(D, H, W, cy)
    px = _encode_axis(W, cx, device, temperature)[None, None, :, :].expand(D, H, W, cx)
    return torch.cat([pz, py, px], dim=-1).reshape(D * H * W, dim)
