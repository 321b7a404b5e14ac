"""3D deformable attention: identity, axis order, fast path vs dense reference, gradients, init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.layers.deformable_attention import (
    VALUE_PATHS,
    MSDeformAttn3D,
    _sample_points,
    deformable_sample,
    fibonacci_directions,
)
from MaskMedCore.layers.deformable_attention_reference import deformable_sample_reference, trilinear_sample_reference
from MaskMedCore.models.bridges.tokens import voxel_centres


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _identity_module(dim: int, heads: int, levels: int, points: int = 1) -> MSDeformAttn3D:
    """Float64 attention with identity value/output projections and zero offsets."""
    attn = MSDeformAttn3D(dim, heads, levels, points, [dim] * levels).double()
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        eye = torch.eye(dim, dtype=torch.float64)
        for proj in attn.value_proj:
            proj.weight.copy_(eye[:, :, None, None, None])
        attn.output_proj.weight.copy_(eye)
        attn.output_proj.bias.zero_()
    return attn


def _select_level(attn: MSDeformAttn3D, level: int) -> None:
    """Make the softmax put all weight on one level (exp(-1e4) is exactly 0 in float64)."""
    M, L, P = attn.heads, attn.levels, attn.points
    logits = torch.full((M, L, P), -1e4, dtype=torch.float64)
    logits[:, level] = 0
    with torch.no_grad():
        attn.attention_weights.bias.copy_(logits.reshape(-1))


def _centres(shape: tuple[int, int, int]) -> torch.Tensor:
    """(DHW, 3) float64 voxel centres, (x, y, z) order."""
    return voxel_centres(shape, dtype=torch.float64)


def _voxels(value: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, DHW, C): the value at every voxel in array order."""
    return value.flatten(2).transpose(1, 2)


# ---------------------------------------------------------------- core: zero offsets sample the voxel itself


@pytest.mark.parametrize("shape", [(5, 7, 9), (9, 5, 7), (1, 4, 6)])
def test_zero_offsets_sample_own_voxel_single_level(shape):
    B, C, M = 2, 6, 3
    value = torch.randn(B, C, *shape, generator=_gen(), dtype=torch.float64)
    ref = _centres(shape)  # (Q, 3)
    Q = ref.shape[0]
    locations = ref[None, :, None, None, None, :].expand(B, Q, M, 1, 1, 3)
    weights = torch.ones(B, Q, M, 1, 1, dtype=torch.float64)
    out = deformable_sample([value], locations, weights)
    torch.testing.assert_close(out, _voxels(value), rtol=0, atol=1e-12)


def test_zero_offsets_multi_level_match_voxel_and_trilinear_value():
    """Queries at level k's voxel centres read level k exactly and the trilinear value elsewhere."""
    B, C, M = 2, 4, 2
    shapes = [(4, 8, 12), (2, 4, 6), (4, 4, 6)]  # full, 2x isotropic, (1, 2, 2)-anisotropic downsample
    values = [torch.randn(B, C, *s, generator=_gen(i), dtype=torch.float64) for i, s in enumerate(shapes)]
    L = len(shapes)
    for k, shape in enumerate(shapes):
        ref = _centres(shape)
        Q = ref.shape[0]
        locations = ref[None, :, None, None, None, :].expand(B, Q, M, L, 1, 3)
        for lvl in range(L):
            weights = torch.zeros(B, Q, M, L, 1, dtype=torch.float64)
            weights[:, :, :, lvl] = 1
            out = deformable_sample(values, locations, weights)
            if lvl == k:
                expected = _voxels(values[lvl])
            else:
                expected = torch.stack([trilinear_sample_reference(values[lvl][b], ref) for b in range(B)])
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_coarse_level_of_a_linear_ramp_is_exact_inside():
    """Trilinear sampling of a ramp is exact between voxel centres: independent of the reference."""
    coeffs = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)  # per (x, y, z)
    fine, coarse = (4, 8, 12), (2, 4, 6)
    ramp = (_centres(coarse) @ coeffs).reshape(1, 1, *coarse)  # value = coeffs . (x, y, z)
    pts = _centres(fine)
    lo = torch.tensor([0.5 / coarse[2], 0.5 / coarse[1], 0.5 / coarse[0]], dtype=torch.float64)
    inside = ((pts >= lo) & (pts <= 1 - lo)).all(-1)
    pts = pts[inside]
    assert pts.shape[0] > 0
    out = deformable_sample([ramp], pts[None, :, None, None, None, :], torch.ones(1, pts.shape[0], 1, 1, 1))
    torch.testing.assert_close(out[0, :, 0], pts @ coeffs, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- module: identity and axis order


def test_module_zero_offsets_is_identity_on_non_cubic_volume():
    shape, B, C = (5, 7, 9), 2, 6
    attn = _identity_module(C, heads=2, levels=1)
    value = torch.randn(B, C, *shape, generator=_gen(), dtype=torch.float64)
    ref = _centres(shape)[None]
    query = torch.randn(B, ref.shape[1], C, generator=_gen(1), dtype=torch.float64)
    out = attn(query, ref, [value])
    torch.testing.assert_close(out, _voxels(value), rtol=0, atol=1e-12)


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_unit_offset_moves_one_voxel_along_its_own_axis(axis, level):
    """+1 in x/y/z moves one voxel of the sampled level along W/H/D only (zeros past the edge)."""
    shapes = [(5, 7, 9), (5, 3, 4)]  # level 1 is an anisotropic downsample
    B, C = 2, 4
    attn = _identity_module(C, heads=2, levels=2)
    _select_level(attn, level)
    component = "xyz".index(axis)
    with torch.no_grad():
        bias = torch.zeros(attn.heads, 2, 1, 3, dtype=torch.float64)
        bias[..., component] = 1
        attn.sampling_offsets.bias.copy_(bias.reshape(-1))
    values = [torch.randn(B, C, *s, generator=_gen(i), dtype=torch.float64) for i, s in enumerate(shapes)]
    ref = _centres(shapes[level])[None]
    query = torch.randn(B, ref.shape[1], C, generator=_gen(2), dtype=torch.float64)
    out = attn(query, ref, values)
    # Expected: the value one voxel further along the array axis, zero beyond the last voxel.
    dim = {"x": 4, "y": 3, "z": 2}[axis]
    shifted = torch.roll(values[level], shifts=-1, dims=dim)
    shifted.narrow(dim, values[level].shape[dim] - 1, 1).zero_()
    torch.testing.assert_close(out, _voxels(shifted), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- fast path vs dense reference


def _random_case(dtype: torch.dtype):
    g = _gen(3)
    B, Q, M, P, C = 2, 13, 3, 4, 6
    shapes = [(4, 6, 5), (2, 3, 3), (3, 5, 7)]
    values = [torch.randn(B, C, *s, generator=g, dtype=dtype) for s in shapes]
    locations = torch.rand(B, Q, M, len(shapes), P, 3, generator=g, dtype=dtype) * 1.4 - 0.2  # some outside
    weights = torch.randn(B, Q, M, len(shapes) * P, generator=g, dtype=dtype).softmax(-1).view(B, Q, M, -1, P)
    return values, locations, weights


def test_fast_path_matches_dense_reference_float64():
    values, locations, weights = _random_case(torch.float64)
    assert ((locations < 0) | (locations > 1)).any()
    torch.testing.assert_close(
        deformable_sample(values, locations, weights),
        deformable_sample_reference(values, locations, weights),
        rtol=0,
        atol=1e-12,
    )


def test_fast_path_matches_dense_reference_float32():
    values, locations, weights = _random_case(torch.float32)
    out = deformable_sample(values, locations, weights)
    assert out.dtype == torch.float32
    ref = deformable_sample_reference(values, locations, weights)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("value_path", VALUE_PATHS)
def test_module_matches_reference_with_random_offsets(value_path):
    """The whole module (offset normaliser, softmax, projections) against a hand-built reference."""
    g = _gen(4)
    B, C, M, P = 2, 8, 2, 3
    shapes = [(6, 5, 7), (3, 5, 4)]
    channels = [3, 5]
    attn = MSDeformAttn3D(C, M, len(shapes), P, channels, value_path=value_path).double()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 2.0, generator=g)
        attn.attention_weights.weight.normal_(0, 1.0, generator=g)
    values = [torch.randn(B, c, *s, generator=g, dtype=torch.float64) for c, s in zip(channels, shapes, strict=True)]
    query = torch.randn(B, 10, C, generator=g, dtype=torch.float64)
    ref = torch.rand(1, 10, 3, generator=g, dtype=torch.float64)
    out = attn(query, ref, values)

    offsets = attn.sampling_offsets(query).view(B, 10, M, 2, P, 3)
    sizes = torch.tensor([[s[2], s[1], s[0]] for s in shapes], dtype=torch.float64)  # (W, H, D) per level
    locations = ref[:, :, None, None, None, :] + offsets / sizes[:, None, :]
    weights = attn.attention_weights(query).view(B, 10, M, 2 * P).softmax(-1).view(B, 10, M, 2, P)
    projected = [proj(v) for proj, v in zip(attn.value_proj, values, strict=True)]
    expected = attn.output_proj(deformable_sample_reference(projected, locations, weights))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_value_paths_agree_in_output_and_gradients():
    """Sampling before projecting is exact: same output and same gradients as projecting first."""
    g = _gen(8)
    values = [torch.randn(2, 3, 12, 10, 14, generator=g), torch.randn(2, 16, 3, 3, 4, generator=g)]
    query = torch.randn(2, 7, 16, generator=g)
    ref = torch.rand(2, 7, 3, generator=g)
    torch.manual_seed(0)
    first = MSDeformAttn3D(16, 4, 2, 3, [3, 16], value_path="project_first")
    with torch.no_grad():
        first.sampling_offsets.weight.normal_(0, 1.0, generator=g)
        first.attention_weights.weight.normal_(0, 1.0, generator=g)
    second = MSDeformAttn3D(16, 4, 2, 3, [3, 16], value_path="sample_first")
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
def test_threaded_point_split_equals_one_grid_sample(batch, threads):
    """Without autograd the CPU sampler splits each item's points over the threads (uneven split,
    padded with outside points): the result must equal one plain grid_sample call bit for bit."""
    g = _gen(9)
    value = torch.randn(batch, 5, 7, 9, 6, generator=g)
    grid = torch.rand(batch, 1, 101, 4, 3, generator=g) * 2.4 - 1.2  # some points outside
    expected = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            split = _sample_points(value, grid)
        with_grad = _sample_points(value.requires_grad_(), grid)  # the plain call, autograd intact
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(split, expected)
    assert torch.equal(with_grad.detach(), expected) and with_grad.grad_fn is not None


def test_auto_value_path_samples_large_thin_levels_first():
    attn = MSDeformAttn3D(32, 4, 2, 2, [4, 64])
    assert attn._sample_first(torch.zeros(1, 4, 32, 32, 32), num_queries=64)  # full-res skip
    assert not attn._sample_first(torch.zeros(1, 64, 2, 2, 2), num_queries=64)  # coarse, wide level


# ---------------------------------------------------------------- gradients, init, numerics, errors


def test_gradients_reach_every_projection():
    g = _gen(5)
    attn = MSDeformAttn3D(8, 2, 2, 2, [3, 8])
    values = [torch.randn(2, 3, 6, 6, 6, generator=g), torch.randn(2, 8, 3, 3, 3, generator=g)]
    query = torch.randn(2, 9, 8, generator=g)
    ref = torch.rand(2, 9, 3, generator=g)
    attn(query, ref, values).square().sum().backward()
    params = {
        "sampling_offsets.weight": attn.sampling_offsets.weight,
        "sampling_offsets.bias": attn.sampling_offsets.bias,
        "attention_weights.weight": attn.attention_weights.weight,
        "value_proj.0.weight": attn.value_proj[0].weight,
        "value_proj.1.weight": attn.value_proj[1].weight,
        "output_proj.weight": attn.output_proj.weight,
    }
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_offsets_are_spread_unit_directions_scaled_per_point():
    M, L, P = 8, 3, 4
    attn = MSDeformAttn3D(16, M, L, P, [16] * L)
    bias = attn.sampling_offsets.bias.detach().view(M, L, P, 3)
    for p in range(P):
        torch.testing.assert_close(bias[:, :, p], bias[:, :, 0] * (p + 1))
    for lvl in range(L):
        torch.testing.assert_close(bias[:, lvl], bias[:, 0])
    torch.testing.assert_close(bias[:, 0, 0].abs().amax(-1), torch.ones(M))
    unit = F.normalize(fibonacci_directions(M), dim=-1)
    cosines = unit @ unit.T - 2 * torch.eye(M)
    assert cosines.max() < 0.8, "head directions should be well spread"
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.attention_weights.bias.abs().sum() == 0


def test_locations_stay_float32_under_bfloat16_autocast():
    """A bf16 grid would be off by up to 0.1 voxel on a 100-voxel axis; ours is not.

    (Power-of-two sizes would hide it: their voxel centres are exact in bf16.)
    """
    g = _gen(6)
    shape = (2, 3, 100)
    value = torch.randn(1, 4, *shape, generator=g)
    attn = MSDeformAttn3D(4, 1, 1, 1, [4])
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        attn.value_proj[0].weight.copy_(torch.eye(4)[:, :, None, None, None])
        attn.output_proj.weight.copy_(torch.eye(4))
        attn.output_proj.bias.zero_()
    ref = voxel_centres(shape)[None]
    query = torch.randn(1, ref.shape[1], 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(query, ref, [value])
    # Only the 1x1 projections run in bf16 (~3 significant digits); sampling must hit the voxel.
    torch.testing.assert_close(out.float(), _voxels(value), rtol=2e-2, atol=2e-2)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn3D(10, 3, 1, 1, [10])
    with pytest.raises(ValueError, match="value_channels"):
        MSDeformAttn3D(8, 2, 2, 1, [8])
    attn = MSDeformAttn3D(8, 2, 2, 1, [8, 8])
    with pytest.raises(ValueError, match="value levels"):
        attn(torch.zeros(1, 3, 8), torch.zeros(1, 3, 3), [torch.zeros(1, 8, 2, 2, 2)])
    with pytest.raises(ValueError, match="reference_points"):
        attn(torch.zeros(1, 3, 8), torch.zeros(1, 3, 2), [torch.zeros(1, 8, 2, 2, 2)] * 2)
    with pytest.raises(ValueError, match=r"values\[1\]"):
        attn(torch.zeros(1, 3, 8), torch.zeros(1, 3, 3), [torch.zeros(1, 8, 2, 2, 2), torch.zeros(1, 4, 2, 2, 2)])
