"""3D point sampling for the matcher and the mask loss (Mask2Former §3.3 "point loss";
PointRend's ``point_sample`` and importance sampling, extended to volumes as in PLAN).

Coordinates are normalised to [0, 1] per axis and ordered (x, y, z) = (W, H, D), which is the
order ``F.grid_sample`` reads for a 5-D input. A coordinate c maps to voxel index ``c * S - 0.5``
(``align_corners=False``), so the same normalised point lands on the same physical location at
every decoder stage. Random draws take an explicit generator; ``None`` means PyTorch's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample_3d(input: Tensor, coords: Tensor) -> Tensor:
    """Trilinearly read ``input`` at normalised points.

    Args:
        input: (N, C, D, H, W) float volume.
        coords: (N, P, 3) float points in [0, 1], ordered (x, y, z) = (w, h, d).

    Returns:
        (N, C, P) values; points outside the volume read 0 (``padding_mode="zeros"``).
    """
    N, C = input.shape[:2]
    P = coords.shape[1]
    grid = (2.0 * coords - 1.0).to(input.dtype)[:, :, None, None, :]  # (N, P, 3) -> (N, P, 1, 1, 3)
    out = F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(N, C, P)  # (N, C, P, 1, 1) -> (N, C, P)


def uniform_points(n: int, num_points: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """Uniform random points in the unit cube.

    Args:
        n: number of point sets N.
        num_points: points per set P.
        device: where the result lives.
        generator: source of randomness; drawn on its own device, then moved to ``device``.

    Returns:
        (N, P, 3) float32 points in [0, 1), ordered (x, y, z).
    """
    draw_device = generator.device if generator is not None else device
    points = torch.rand((n, num_points, 3), generator=generator, device=draw_device, dtype=torch.float32)
    return points.to(device)


def point_uncertainty(logits: Tensor) -> Tensor:
    """PointRend's uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


@torch.no_grad()
def importance_points(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend importance sampling: mostly uncertain points, plus some uniform ones.

    Draws ``oversample_ratio * P`` uniform candidates, keeps the ``importance_sample_ratio * P``
    most uncertain of them (uncertainty computed after sampling the logits), and fills the rest
    with fresh uniform points.

    Args:
        logits: (N, 1, D, H, W) mask logits; no gradient flows through the selection.
        num_points: P, points per mask.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in [0, 1].
        generator: source of randomness.

    Returns:
        (N, P, 3) float32 points in [0, 1], ordered (x, y, z).
    """
    N = logits.shape[0]
    num_candidates = max(int(num_points * oversample_ratio), num_points)
    num_uncertain = min(int(importance_sample_ratio * num_points), num_points)
    num_random = num_points - num_uncertain
    candidates = uniform_points(N, num_candidates, logits.device, generator)  # (N, kP, 3)
    uncertainty = point_uncertainty(point_sample_3d(logits.float(), candidates))[:, 0]  # (N, kP)
    top = uncertainty.topk(num_uncertain, dim=1).indices  # (N, beta P)
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 3))  # (N, beta P, 3)
    if num_random == 0:
        return chosen
    return torch.cat([chosen, uniform_points(N, num_random, logits.device, generator)], dim=1)
