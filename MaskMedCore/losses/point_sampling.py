"""Point sampling for the matcher and the mask loss, in 2D and 3D (Mask2Former §3.3 "point loss";
PointRend's ``point_sample`` and importance sampling, extended to volumes as in PLAN).

Coordinates are normalised to [0, 1] per axis and ordered fastest axis first: (x, y, z) = (W, H, D)
for volumes, (x, y) = (W, H) for images, which is the order ``F.grid_sample`` reads for a 5-D / 4-D
input. A coordinate c maps to voxel index ``c * S - 0.5`` (``align_corners=False``), so the same
normalised point lands on the same physical location at every decoder stage. The number of spatial
axes is read from the input (``input.dim() - 2``). Random draws take an explicit generator; ``None``
means PyTorch's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(input: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly (2D) or trilinearly (3D) read ``input`` at normalised points.

    Args:
        input: (N, C, D, H, W) float volume or (N, C, H, W) float image.
        coords: (N, P, 3) points ordered (x, y, z) = (w, h, d) for a volume, (N, P, 2) ordered
            (x, y) = (w, h) for an image; in [0, 1].

    Returns:
        (N, C, P) values; points outside the input read 0 (``padding_mode="zeros"``).

    Raises:
        ValueError: the input is neither 4-D nor 5-D, or the points have the wrong number of coordinates.
    """
    spatial_dims = input.dim() - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"input must be (N, C, H, W) or (N, C, D, H, W), got shape {tuple(input.shape)}")
    if coords.dim() != 3 or coords.shape[-1] != spatial_dims or coords.shape[0] != input.shape[0]:
        raise ValueError(
            f"coords must be (N, P, {spatial_dims}) = ({input.shape[0]}, P, {spatial_dims}) for an input of shape "
            f"{tuple(input.shape)}, got {tuple(coords.shape)}"
        )
    N, C = input.shape[:2]
    P = coords.shape[1]
    # (N, P, n) -> (N, P, 1, [1,] n): grid_sample's output grid is P x 1 (x 1) points.
    grid = (2.0 * coords - 1.0).to(input.dtype).reshape(N, P, *([1] * (spatial_dims - 1)), spatial_dims)
    out = F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(N, C, P)  # (N, C, P, 1[, 1]) -> (N, C, P)


def point_sample_3d(input: Tensor, coords: Tensor) -> Tensor:
    """:func:`point_sample` of a volume: (N, C, D, H, W) input, (N, P, 3) points -> (N, C, P).

    Raises:
        ValueError: the input is not 5-D (use :func:`point_sample` for images).
    """
    if input.dim() != 5:
        raise ValueError(f"point_sample_3d needs an (N, C, D, H, W) input, got shape {tuple(input.shape)}")
    return point_sample(input, coords)


def uniform_points(
    n: int,
    num_points: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    spatial_dims: int = 3,
) -> Tensor:
    """Uniform random points in the unit cube (or square).

    Args:
        n: number of point sets N.
        num_points: points per set P.
        device: where the result lives.
        generator: source of randomness; drawn on its own device, then moved to ``device``.
        spatial_dims: 3 for volumes, 2 for images.

    Returns:
        (N, P, spatial_dims) float32 points in [0, 1), ordered (x, y[, z]).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    draw_device = generator.device if generator is not None else device
    points = torch.rand((n, num_points, spatial_dims), generator=generator, device=draw_device, dtype=torch.float32)
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
        logits: (N, 1, D, H, W) or (N, 1, H, W) mask logits; no gradient flows through the selection.
        num_points: P, points per mask.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in [0, 1].
        generator: source of randomness.

    Returns:
        (N, P, 3) float32 points ordered (x, y, z) for volumes, (N, P, 2) ordered (x, y) for images; in [0, 1].
    """
    N = logits.shape[0]
    spatial_dims = logits.dim() - 2
    num_candidates = max(int(num_points * oversample_ratio), num_points)
    num_uncertain = min(int(importance_sample_ratio * num_points), num_points)
    num_random = num_points - num_uncertain
    candidates = uniform_points(N, num_candidates, logits.device, generator, spatial_dims)  # (N, kP, n)
    uncertainty = point_uncertainty(point_sample(logits.float(), candidates))[:, 0]  # (N, kP)
    top = uncertainty.topk(num_uncertain, dim=1).indices  # (N, beta P)
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, spatial_dims))  # (N, beta P, n)
    if num_random == 0:
        return chosen
    return torch.cat([chosen, uniform_points(N, num_random, logits.device, generator, spatial_dims)], dim=1)
