"""2D deformable attention (Deformable DETR's MSDeformAttn, the same module with ``spatial_dims=2``):
identity, axis order, fast path vs the bilinear reference, value paths, gradients, init, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.layers.deformable_attention import (
    VALUE_PATHS,
    MSDeformAttn,
    _sample_points,
    circle_directions,
    deformable_sample,
    deformable_sample_then_project,
)
from MaskMedCore.layers.deformable_attention_reference import bilinear_sample_reference, deformable_sample_reference
from MaskMedCore.models.bridges.tokens import voxel_centres


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _identity_module(dim: int, heads: int, levels: int, points: int = 1) -> MSDeformAttn:
    """Float64 2D attention with identity value/output projections and zero offsets."""
    attn = MSDeformAttn(dim, heads, levels, points, [dim] * levels, spatial_dims=2).double()
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        eye = torch.eye(dim, dtype=torch.float64)
        for proj in attn.value_proj:
            proj.weight.copy_(eye[:, :, None, None])
        attn.output_proj.weight.copy_(eye)
        attn.output_proj.bias.zero_()
    return attn


def _select_level(attn: MSDeformAttn, level: int) -> None:
    """Make the softmax put all weight on one level (exp(-1e4) is exactly 0 in float64)."""
    logits = torch.full((attn.heads, attn.levels, attn.points), -1e4, dtype=torch.float64)
    logits[:, level] = 0
    with torch.no_grad():
        attn.attention_weights.bias.copy_(logits.reshape(-1))


def _pixels(value: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, HW, C): the value at every pixel in array order."""
    return value.flatten(2).transpose(1, 2)


# ---------------------------------------------------------------- identity and axis order


def test_pixel_centres_are_ordered_x_then_y():
    centres = voxel_centres((2, 4), dtype=torch.float64)  # (H, W) = (2, 4)
    assert centres.shape == (8, 2)
    # Array order: row h = 1, column w = 2 is entry 1 * 4 + 2, at (x, y) = ((2 + 0.5) / 4, (1 + 0.5) / 2).
    torch.testing.assert_close(centres[6], torch.tensor([2.5 / 4, 1.5 / 2], dtype=torch.float64))


def test_zero_offsets_read_each_querys_own_pixel_on_a_non_square_image():
    shape, B, C = (7, 9), 2, 6
    attn = _identity_module(C, heads=2, levels=1)
    value = torch.randn(B, C, *shape, generator=_gen(), dtype=torch.float64)
    ref = voxel_centres(shape, dtype=torch.float64)[None]  # (1, HW, 2)
    query = torch.randn(B, ref.shape[1], C, generator=_gen(1), dtype=torch.float64)
    out = attn(query, ref, [value])
    torch.testing.assert_close(out, _pixels(value), rtol=0, atol=1e-12)


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_unit_offset_moves_one_pixel_along_its_own_axis(axis, level):
    """+1 in x moves one pixel of the sampled level along W, +1 in y along H (zeros past the edge)."""
    shapes = [(7, 9), (3, 5)]  # level 1 is a coarser, non-square level
    B, C = 2, 4
    attn = _identity_module(C, heads=2, levels=2)
    _select_level(attn, level)
    with torch.no_grad():
        bias = torch.zeros(attn.heads, 2, 1, 2, dtype=torch.float64)
        bias[..., "xy".index(axis)] = 1
        attn.sampling_offsets.bias.copy_(bias.reshape(-1))
    values = [torch.randn(B, C, *s, generator=_gen(i), dtype=torch.float64) for i, s in enumerate(shapes)]
    ref = voxel_centres(shapes[level], dtype=torch.float64)[None]
    query = torch.randn(B, ref.shape[1], C, generator=_gen(2), dtype=torch.float64)
    out = attn(query, ref, values)
    dim = {"x": 3, "y": 2}[axis]  # W is the last array axis, H the one before
    shifted = torch.roll(values[level], shifts=-1, dims=dim)
    shifted.narrow(dim, values[level].shape[dim] - 1, 1).zero_()
    torch.testing.assert_close(out, _pixels(shifted), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- fast path vs the bilinear reference


def test_bilinear_reference_is_exact_on_a_linear_ramp():
    """Bilinear interpolation reproduces a plane between pixel centres: checks the reference itself."""
    coeffs = torch.tensor([0.7, -1.3], dtype=torch.float64)  # per (x, y)
    shape = (5, 8)
    ramp = (voxel_centres(shape, dtype=torch.float64) @ coeffs).reshape(1, *shape)
    pts = torch.rand(50, 2, generator=_gen(7), dtype=torch.float64)
    lo = torch.tensor([0.5 / shape[1], 0.5 / shape[0]], dtype=torch.float64)
    pts = lo + pts * (1 - 2 * lo)  # inside the outermost centres
    torch.testing.assert_close(bilinear_sample_reference(ramp, pts)[:, 0], pts @ coeffs, rtol=0, atol=1e-12)


def _random_case(dtype: torch.dtype):
    g = _gen(3)
    B, Q, M, P, C = 2, 13, 3, 4, 6
    shapes = [(6, 5), (3, 3), (5, 7)]
    values = [torch.randn(B, C, *s, generator=g, dtype=dtype) for s in shapes]
    locations = torch.rand(B, Q, M, len(shapes), P, 2, generator=g, dtype=dtype) * 1.4 - 0.2  # some outside
    weights = torch.randn(B, Q, M, len(shapes) * P, generator=g, dtype=dtype).softmax(-1).view(B, Q, M, -1, P)
    return values, locations, weights


def test_fast_path_matches_bilinear_reference_float64():
    values, locations, weights = _random_case(torch.float64)
    assert ((locations < 0) | (locations > 1)).any()
    torch.testing.assert_close(
        deformable_sample(values, locations, weights),
        deformable_sample_reference(values, locations, weights),
        rtol=0,
        atol=1e-12,
    )


def test_sample_then_project_matches_reference_float64():
    values, locations, weights = _random_case(torch.float64)
    g = _gen(11)
    # (C, C_l) bias-free projections; C = 9 divides by the case's M = 3 heads.
    projections = [torch.randn(9, v.shape[1], generator=g, dtype=torch.float64) for v in values]
    projected = [torch.einsum("oc,bchw->bohw", p, v) for p, v in zip(projections, values, strict=True)]
    torch.testing.assert_close(
        deformable_sample_then_project(values, projections, locations, weights),
        deformable_sample_reference(projected, locations, weights),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize("value_path", VALUE_PATHS)
def test_module_matches_reference_with_random_offsets(value_path):
    """The whole module (offset normaliser (W, H), softmax, projections) against a hand-built reference."""
    g = _gen(4)
    B, C, M, P, Q = 2, 8, 2, 3, 10
    shapes = [(6, 9), (3, 4)]
    channels = [3, 5]
    attn = MSDeformAttn(C, M, len(shapes), P, channels, value_path=value_path, spatial_dims=2).double()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 2.0, generator=g)
        attn.attention_weights.weight.normal_(0, 1.0, generator=g)
    values = [torch.randn(B, c, *s, generator=g, dtype=torch.float64) for c, s in zip(channels, shapes, strict=True)]
    query = torch.randn(B, Q, C, generator=g, dtype=torch.float64)
    ref = torch.rand(1, Q, 2, generator=g, dtype=torch.float64)
    out = attn(query, ref, values)

    offsets = attn.sampling_offsets(query).view(B, Q, M, 2, P, 2)
    sizes = torch.tensor([[s[1], s[0]] for s in shapes], dtype=torch.float64)  # (W, H) per level
    locations = ref[:, :, None, None, None, :] + offsets / sizes[:, None, :]
    weights = attn.attention_weights(query).view(B, Q, M, 2 * P).softmax(-1).view(B, Q, M, 2, P)
    projected = [proj(v) for proj, v in zip(attn.value_proj, values, strict=True)]
    expected = attn.output_proj(deformable_sample_reference(projected, locations, weights))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_sample_first_equals_project_first_in_output_and_gradients():
    g = _gen(8)
    values = [torch.randn(2, 3, 12, 14, generator=g), torch.randn(2, 16, 3, 4, generator=g)]
    query = torch.randn(2, 7, 16, generator=g)
    ref = torch.rand(2, 7, 2, generator=g)
    torch.manual_seed(0)
    first = MSDeformAttn(16, 4, 2, 3, [3, 16], value_path="project_first", spatial_dims=2)
    with torch.no_grad():
        first.sampling_offsets.weight.normal_(0, 1.0, generator=g)
        first.attention_weights.weight.normal_(0, 1.0, generator=g)
    second = MSDeformAttn(16, 4, 2, 3, [3, 16], value_path="sample_first", spatial_dims=2)
    second.load_state_dict(first.state_dict())
    outs, grads = [], []
    for attn in (first, second):
        vals = [v.clone().requires_grad_() for v in values]
        out = attn(query, ref, vals)
        out.square().sum().backward()
        outs.append(out)
        grads.append([v.grad for v in vals] + [p.grad for p in attn.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch, threads", [(1, 2), (1, 3), (2, 4)])
def test_threaded_point_split_equals_one_grid_sample_2d(batch, threads):
    """The CPU sampler's per-thread point split gives grid_sample's result bit for bit on 4-D input too."""
    g = _gen(9)
    value = torch.randn(batch, 5, 9, 6, generator=g)
    grid = torch.rand(batch, 101, 4, 2, generator=g) * 2.4 - 1.2  # some points outside
    expected = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            split = _sample_points(value, grid)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(split, expected)


# ---------------------------------------------------------------- gradients, init, errors


def test_gradients_reach_sampling_offsets_and_every_projection():
    g = _gen(5)
    attn = MSDeformAttn(8, 2, 2, 2, [3, 8], spatial_dims=2)
    values = [torch.randn(2, 3, 10, 12, generator=g), torch.randn(2, 8, 5, 6, generator=g)]
    query = torch.randn(2, 9, 8, generator=g)
    ref = torch.rand(2, 9, 2, generator=g)
    attn(query, ref, values).square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_offsets_are_deformable_detr_circle_directions():
    """Head m starts along angle 2 pi m / M, (cos, sin) scaled to max |component| 1, times p + 1 for point p."""
    M, L, P = 8, 3, 4
    attn = MSDeformAttn(16, M, L, P, [16] * L, spatial_dims=2)
    assert attn.sampling_offsets.out_features == M * L * P * 2
    bias = attn.sampling_offsets.bias.detach().view(M, L, P, 2)
    thetas = torch.arange(M) * (2 * math.pi / M)
    dirs = torch.stack([thetas.cos(), thetas.sin()], -1)
    dirs = dirs / dirs.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(circle_directions(M), dirs)
    for p in range(P):
        for lvl in range(L):
            torch.testing.assert_close(bias[:, lvl, p], dirs * (p + 1))
    torch.testing.assert_close(bias[0, 0, 0], torch.tensor([1.0, 0.0]))  # head 0 looks along +x (W)
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.attention_weights.bias.abs().sum() == 0
    assert all(isinstance(proj, torch.nn.Conv2d) for proj in attn.value_proj)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="spatial_dims"):
        MSDeformAttn(8, 2, 1, 1, [8], spatial_dims=1)
    attn = MSDeformAttn(8, 2, 1, 1, [8], spatial_dims=2)
    with pytest.raises(ValueError, match="reference_points"):
        attn(torch.zeros(1, 3, 8), torch.zeros(1, 3, 3), [torch.zeros(1, 8, 2, 2)])  # (x, y, z) points in 2D
    with pytest.raises(ValueError, match=r"values\[0\].*H, W"):
        attn(torch.zeros(1, 3, 8), torch.zeros(1, 3, 2), [torch.zeros(1, 8, 2, 2, 2)])  # a volume in 2D
