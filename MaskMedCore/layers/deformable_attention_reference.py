"""Dense reference of the 3D and 2D deformable-attention sampling core, for tests only.

An independent, deliberately plain re-derivation of :func:`MaskMedCore.layers.deformable_attention.deformable_sample`
(MaskMed §3.3 and appendix B; Deformable DETR's ``ms_deform_attn_core_pytorch``, and its 3D extension). It
does not use ``F.grid_sample``: trilinear (2D: bilinear) interpolation is written out explicitly (floor,
the 8 (4) corner voxels, their weights, zero for corners outside the volume) in float64. The tests compare
the fast path against it; it is too slow and memory-hungry for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def trilinear_sample_reference(volume: Tensor, points: Tensor) -> Tensor:
    """Trilinear interpolation of a channel-first volume at normalised points, zeros outside.

    Voxel centre ``i`` of an axis of size ``S`` sits at ``(i + 0.5) / S`` (``align_corners=False``).

    Args:
        volume: (C, D, H, W).
        points: (N, 3) in normalised [0, 1] coordinates ordered (x, y, z) = (w, h, d).

    Returns:
        (N, C) float64.
    """
    C, D, H, W = volume.shape
    vol = volume.to(torch.float64).reshape(C, D * H * W)
    pts = points.to(torch.float64)
    # Continuous voxel index along each axis: centre i <-> index i.
    fx, fy, fz = pts[:, 0] * W - 0.5, pts[:, 1] * H - 0.5, pts[:, 2] * D - 0.5
    x0, y0, z0 = fx.floor(), fy.floor(), fz.floor()
    out = torch.zeros(pts.shape[0], C, dtype=torch.float64, device=volume.device)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
                wx = (fx - x0) if dx else (1 - (fx - x0))
                wy = (fy - y0) if dy else (1 - (fy - y0))
                wz = (fz - z0) if dz else (1 - (fz - z0))
                inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H) & (zi >= 0) & (zi < D)
                flat = (zi.clamp(0, D - 1) * H + yi.clamp(0, H - 1)) * W + xi.clamp(0, W - 1)
                corner = vol[:, flat.long()].T  # (N, C)
                out += corner * (wx * wy * wz * inside)[:, None]
    return out


def bilinear_sample_reference(image: Tensor, points: Tensor) -> Tensor:
    """Bilinear interpolation of a channel-first image at normalised points, zeros outside.

    Pixel centre ``i`` of an axis of size ``S`` sits at ``(i + 0.5) / S`` (``align_corners=False``).

    Args:
        image: (C, H, W).
        points: (N, 2) in normalised [0, 1] coordinates ordered (x, y) = (w, h).

    Returns:
        (N, C) float64.
    """
    C, H, W = image.shape
    img = image.to(torch.float64).reshape(C, H * W)
    pts = points.to(torch.float64)
    # Continuous pixel index along each axis: centre i <-> index i.
    fx, fy = pts[:, 0] * W - 0.5, pts[:, 1] * H - 0.5
    x0, y0 = fx.floor(), fy.floor()
    out = torch.zeros(pts.shape[0], C, dtype=torch.float64, device=image.device)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wx = (fx - x0) if dx else (1 - (fx - x0))
            wy = (fy - y0) if dy else (1 - (fy - y0))
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            flat = yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)
            corner = img[:, flat.long()].T  # (N, C)
            out += corner * (wx * wy * inside)[:, None]
    return out


def deformable_sample_reference(values: Sequence[Tensor], locations: Tensor, weights: Tensor) -> Tensor:
    """Loop-based reference of ``deformable_sample``: same arguments, same result, float64.

    Args:
        values: L tensors, level l of shape (B, C, D_l, H_l, W_l) (2D: (B, C, H_l, W_l)); head m owns
            channels m*C/M ... (m+1)*C/M - 1.
        locations: (B, Q, M, L, P, n) in [0, 1], ordered (x, y, z) = (w, h, d) (n = 3) or (x, y) (n = 2).
        weights: (B, Q, M, L, P).

    Returns:
        (B, Q, C) float64.
    """
    B, Q, M, L, P, n = locations.shape
    sample = trilinear_sample_reference if n == 3 else bilinear_sample_reference
    C = values[0].shape[1]
    Cm = C // M
    out = torch.zeros(B, Q, C, dtype=torch.float64, device=locations.device)
    for b in range(B):
        for m in range(M):
            for lvl in range(L):
                head_volume = values[lvl][b, m * Cm : (m + 1) * Cm]  # (C/M, D_l, H_l, W_l) or (C/M, H_l, W_l)
                points = locations[b, :, m, lvl].reshape(Q * P, n)
                sampled = sample(head_volume, points).view(Q, P, Cm)
                w = weights[b, :, m, lvl].to(torch.float64)  # (Q, P)
                out[b, :, m * Cm : (m + 1) * Cm] += (sampled * w[:, :, None]).sum(1)
    return out


__all__ = ["bilinear_sample_reference", "deformable_sample_reference", "trilinear_sample_reference"]
