"""3D point sampling: axis order, randomness through explicit generators, importance selection."""

from __future__ import annotations

import torch

from MaskMedCore.losses.point_sampling import importance_points, point_sample_3d, uniform_points


def test_point_sample_reads_x_y_z_as_w_h_d():
    D, H, W = 3, 4, 5  # all different, so any axis swap reads wrong values (or out of range)
    d, h, w = torch.meshgrid(torch.arange(D), torch.arange(H), torch.arange(W), indexing="ij")
    volume = (100 * d + 10 * h + w).float()[None, None]  # (1, 1, D, H, W)
    idx = torch.tensor([[0, 0, 0], [2, 3, 4], [1, 2, 0], [0, 3, 1], [2, 0, 4]])  # (d, h, w)
    centres = (idx.flip(-1).float() + 0.5) / torch.tensor([W, H, D])  # (x, y, z) = (w, h, d)
    values = point_sample_3d(volume, centres[None])  # (1, 1, P)
    expected = (100 * idx[:, 0] + 10 * idx[:, 1] + idx[:, 2]).float()
    torch.testing.assert_close(values[0, 0], expected)


def test_point_sample_is_trilinear_between_centres():
    volume = torch.tensor([0.0, 10.0]).view(1, 1, 1, 1, 2)  # varies along W only
    coords = torch.tensor([[[0.5, 0.5, 0.5], [0.25, 0.5, 0.5], [0.0, 0.5, 0.5]]])
    torch.testing.assert_close(point_sample_3d(volume, coords)[0, 0], torch.tensor([5.0, 0.0, 0.0]))
    # x = 0 is the outer edge: half the corner voxel, half the zero padding
    volume = torch.ones(1, 2, 2, 2, 2)
    out = point_sample_3d(volume, torch.tensor([[[0.0, 0.5, 0.5]]]))
    assert out.shape == (1, 2, 1) and torch.allclose(out, torch.full_like(out, 0.5))


def test_uniform_points_follow_the_generator():
    a = uniform_points(2, 7, torch.device("cpu"), torch.Generator().manual_seed(3))
    b = uniform_points(2, 7, torch.device("cpu"), torch.Generator().manual_seed(3))
    assert a.shape == (2, 7, 3) and a.dtype == torch.float32
    assert torch.equal(a, b) and (a >= 0).all() and (a < 1).all()


def test_importance_points_prefer_uncertain_regions():
    logits = torch.full((2, 1, 8, 8, 8), 20.0)
    logits[:, :, :, :, :2] = 0.0  # uncertain slab: w in {0, 1}, i.e. x < 0.25
    g = torch.Generator().manual_seed(0)
    # 256 candidates, about 80 of them near the slab: the 32 most uncertain all lie there.
    points = importance_points(logits, 32, oversample_ratio=8.0, importance_sample_ratio=1.0, generator=g)
    assert points.shape == (2, 32, 3)
    # Trilinear reads mix in the certain side within half a voxel of the slab, hence 0.25 + 1/16.
    assert (points[..., 0] < 0.25 + 1 / 16).all()
    mixed = importance_points(logits, 32, oversample_ratio=8.0, importance_sample_ratio=0.75, generator=g)
    assert mixed.shape == (2, 32, 3)
    assert (mixed[:, :24, 0] < 0.25 + 1 / 16).all()  # the 24 = 0.75 * 32 uncertain points come first
    assert (mixed[:, 24:, 0] > 0.25 + 1 / 16).any()  # the rest are uniform
    assert not mixed.requires_grad
