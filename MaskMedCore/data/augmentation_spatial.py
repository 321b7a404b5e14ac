"""Spatial augmentation on the training device: rotation, scaling, elastic deformation, centre crop, mirroring.

nnU-Net v2's ``SpatialTransform`` and ``MirrorTransform`` (batchgeneratorsv2), re-implemented with
one ``affine_grid`` + ``grid_sample`` per batch. The grid maps every voxel of the final patch to a
point of the enlarged sample; a voxel at offset ``u`` (in voxels, (d, h, w) order) from the patch
centre reads the sample at ``c + R^T diag(1/s) u (+ elastic displacement)``, where ``c`` is the
sample voxel that a plain centre crop would put at the patch centre. So a rotation by ``+theta``
rotates the content by ``+theta`` and ``s > 1`` magnifies it; with ``R = I`` and ``s = 1`` the
grid reproduces the centre crop.

``grid_sample`` expects the last grid dimension in (x, y, z) = (W, H, D) order, the reverse of our
(d, h, w) arrays; ``affine_theta`` does that reversal in one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from MaskMedCore.data.augmentation_intensity import gaussian_smooth

Triplet = tuple[int, int, int]


def rotation_matrix(angles_deg: Sequence[float]) -> torch.Tensor:
    """(3, 3) float64 rotation R = R_D @ R_H @ R_W in (d, h, w) order.

    Args:
        angles_deg: angles about the D, H and W axes in degrees. About D the (h, w) plane turns from
            h towards w (``torch.rot90(x, 1, dims=(h, w))`` for +90); about H the (d, w) plane from w
            towards d; about W the (d, h) plane from d towards h.
    """
    a = [math.radians(float(v)) for v in angles_deg]
    c, s = [math.cos(v) for v in a], [math.sin(v) for v in a]
    r_d = torch.tensor([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]], dtype=torch.float64)
    r_h = torch.tensor([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]], dtype=torch.float64)
    r_w = torch.tensor([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]], dtype=torch.float64)
    return r_d @ r_h @ r_w


def centre_crop_start(sample_size: Sequence[int], patch_size: Sequence[int]) -> Triplet:
    """First voxel of the centred ``patch_size`` crop of ``sample_size`` (rounded down)."""
    return tuple((s - p) // 2 for s, p in zip(sample_size, patch_size))  # type: ignore[return-value]


def centre_crop(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Centre crop of the last three dims of ``x`` (..., D', H', W') to ``patch_size`` (a view)."""
    start = centre_crop_start(x.shape[-3:], patch_size)
    return x[(..., *(slice(o, o + p) for o, p in zip(start, patch_size)))]


def affine_theta(sample_to_patch: torch.Tensor, sample_size: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """``affine_grid`` matrix for the voxel map ``v = c + A u`` (see module docstring).

    Args:
        sample_to_patch: (3, 3) float64 matrix A in (d, h, w) order, patch offset -> sample offset.
        sample_size: (D', H', W') of the input.
        patch_size: (D, H, W) of the output.

    Returns:
        (3, 4) float64 theta in grid_sample's (x, y, z) = (w, h, d) order, for ``align_corners=False``.
    """
    S_in = torch.tensor([float(s) for s in sample_size], dtype=torch.float64)
    S_out = torch.tensor([float(p) for p in patch_size], dtype=torch.float64)
    start = torch.tensor(centre_crop_start(sample_size, patch_size), dtype=torch.float64)
    centre = start + (S_out - 1) / 2  # sample voxel index of the patch centre
    # With align_corners=False, index i of size S has normalised coordinate (2i + 1) / S - 1, and a
    # patch offset u has normalised coordinate m = 2u / S_out. Hence n = L m + t with:
    linear = torch.diag(1 / S_in) @ sample_to_patch @ torch.diag(S_out)
    shift = (2 * centre + 1) / S_in - 1
    # (d, h, w) -> (x, y, z) = (w, h, d): reverse rows and columns.
    return torch.cat([linear.flip(0).flip(1), shift.flip(0)[:, None]], dim=1)


def elastic_displacement(
    patch_size: Sequence[int],
    alpha: float,
    sigma: float,
    dummy_2d: bool,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """A smooth random displacement field in sample voxels.

    Uniform noise in [-1, 1] per component, Gaussian-smoothed with ``sigma`` voxels, scaled so each
    component's largest magnitude is ``alpha`` voxels. With ``dummy_2d`` the field lies in the
    (H, W) plane and is the same for every slice along D.

    Returns:
        (3, D, H, W) float32 displacement in (d, h, w) order.
    """
    D, H, W = patch_size
    if dummy_2d:
        noise = torch.rand((1, 2, 1, H, W), generator=generator, device=device) * 2 - 1
        field = gaussian_smooth(noise, (0.0, sigma, sigma))[0]
        field = torch.cat([torch.zeros_like(field[:1]), field], dim=0).expand(3, D, H, W)
    else:
        noise = torch.rand((1, 3, D, H, W), generator=generator, device=device) * 2 - 1
        field = gaussian_smooth(noise, (sigma, sigma, sigma))[0]
    peak = field.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
    return field * (alpha / peak)[:, None, None, None]


def spatial_transform(
    images: torch.Tensor,
    labels: torch.Tensor,
    patch_size: Sequence[int],
    sample_to_patch: torch.Tensor,
    displacement: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample a batch through per-sample affine maps (plus optional displacement) to ``patch_size``.

    Images are interpolated trilinearly, labels by nearest neighbour; both read 0 outside the sample.

    Args:
        images: (B, C, D', H', W') float.
        labels: (B, D', H', W') integer labels.
        patch_size: (D, H, W) output size.
        sample_to_patch: (B, 3, 3) float64 maps A (see ``affine_theta``).
        displacement: optional (B, 3, D, H, W) displacement in sample voxels, (d, h, w) order.

    Returns:
        images: (B, C, D, H, W), same dtype as the input.
        labels: (B, D, H, W), same dtype as the input.
    """
    B, C = images.shape[:2]
    sample_size = images.shape[-3:]
    theta = torch.stack([affine_theta(a, sample_size, patch_size) for a in sample_to_patch])
    theta = theta.to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [B, C, *patch_size], align_corners=False)  # (B, D, H, W, 3) as (x, y, z)
    if displacement is not None:
        scale = 2.0 / torch.tensor([float(s) for s in sample_size], device=images.device)
        # (B, 3, D, H, W) voxels (d, h, w) -> (B, D, H, W, 3) normalised (x, y, z)
        grid = grid + (displacement * scale[None, :, None, None, None]).permute(0, 2, 3, 4, 1).flip(-1)
    out_images = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(
        images.dtype
    )
    out_labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out_images, out_labels[:, 0].round().to(labels.dtype)


def mirror(image: torch.Tensor, labels: torch.Tensor, axes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip one sample's image (C, D, H, W) and labels (D, H, W) along spatial ``axes`` (0 = D)."""
    if not axes:
        return image, labels
    return torch.flip(image, [a + 1 for a in axes]), torch.flip(labels, list(axes))
