"""Multi-scale deformable attention in 3D and 2D (MSDeformAttn) with a pure-PyTorch sampling core.

Implements the attention of MaskMed's FSAD-Transformer (MaskMed §3.3 and appendix B): each query
predicts, per head, ``L*P`` sampling offsets and attention weights with two linear layers; the
value maps are sampled at ``reference point + offset`` by trilinear (2D: bilinear) interpolation and
summed with the attention weights. The 2D original is Deformable DETR (Zhu et al., ICLR 2021,
fundamentalvision/Deformable-DETR ``MSDeformAttn``), as used by Mask2Former's pixel decoder; one code
path serves both, the number of spatial axes n (2 or 3) set by the module's ``spatial_dims`` and, in
the functions, read from the locations' last axis (issue 13).

Conventions (see ``shared/reference/upstream-facts.md`` §4.4):

- Reference points and offsets are ordered ``(x, y, z) = (w, h, d)`` (2D: ``(x, y) = (w, h)``), the
  order in which ``F.grid_sample`` reads the last grid axis. The offset normaliser is therefore
  ``(W_l, H_l, D_l)`` (2D: ``(W_l, H_l)``): offsets are in voxels of the level being sampled.
- Voxel centre ``i`` of an axis of size ``S`` is at ``(i + 0.5) / S``, which with
  ``align_corners=False`` lands exactly on that voxel. Samples outside the volume read zeros.
- Values stay channel-first ``(B, C, D, H, W)`` (2D: ``(B, C, H, W)``) and are viewed per head as
  ``(B*M, C/M, D, H, W)`` without a copy, so memory is linear in voxels (never a
  ``(B, DHW, C)`` flatten of the full-resolution level).
- Offsets, locations, the softmax and the sampling itself run in float32 (float64 stays float64)
  with autocast off: a bfloat16 grid would quantise locations by up to a quarter of a voxel on a
  64-voxel axis. The cost is a float32 copy of each value level under autocast.

``deformable_attention_reference.py`` holds an independent dense trilinear and bilinear reference of
:func:`deformable_sample` used by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VALUE_PATHS = ("auto", "project_first", "sample_first")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _grid_shape(batch: int, points: int, samples: int, axes: int) -> tuple[int, ...]:
    """Shape of a grid_sample grid holding ``points`` x ``samples`` locations per batch item.

    grid_sample's output has the grid's spatial shape: a 1 x N x P "volume" in 3D, an N x P "image" in 2D.
    """
    return (batch, *([1] * (axes - 2)), points, samples, axes)


def deformable_sample(values: Sequence[Tensor], locations: Tensor, weights: Tensor) -> Tensor:
    """Sample every value level at the given locations and sum with the attention weights.

    Head ``m`` owns channels ``m*C/M ... (m+1)*C/M - 1`` of every value level (head-major
    channels, as after the usual ``concat(heads)``). The number of spatial axes n is ``locations.shape[-1]``.

    Args:
        values: L tensors, level l of shape (B, C, D_l, H_l, W_l) (2D: (B, C, H_l, W_l)); C divisible by M.
        locations: (B, Q, M, L, P, n) sampling locations in [0, 1], ordered (x, y, z) = (w, h, d)
            (2D: (x, y) = (w, h)); voxel centre i of an axis of size S is (i + 0.5) / S. Locations
            outside [0, 1] read zeros.
        weights: (B, Q, M, L, P) attention weights (normally softmaxed over L*P per head).

    Returns:
        (B, Q, C) in float32 (float64 if the values are float64).
    """
    B, Q, M, L, P, n = locations.shape
    if n not in (2, 3):
        raise ValueError(f"locations has {n} coordinates per point; expected 2 (x, y) or 3 (x, y, z)")
    if len(values) != L:
        raise ValueError(f"values has {len(values)} levels but locations has L={L}")
    C = values[0].shape[1]
    if C % M:
        raise ValueError(f"value channels C={C} are not divisible by the number of heads M={M}")
    dtype = _compute_dtype(values[0].dtype)
    with torch.autocast(device_type=locations.device.type, enabled=False):
        # (B, Q, M, L, P, n) -> (B, M, Q, L, P, n); grid_sample wants coordinates in [-1, 1].
        grid = (2 * locations.to(dtype) - 1).permute(0, 2, 1, 3, 4, 5)
        # (B, Q, M, L, P) -> (B*M, 1, Q, L, P)
        attn = weights.to(dtype).permute(0, 2, 1, 3, 4).reshape(B * M, 1, Q, L, P)
        out = None
        for lvl, value in enumerate(values):
            if value.dim() != 2 + n or value.shape[0] != B or value.shape[1] != C:
                expected = "(B={B}, C={C}, D, H, W)" if n == 3 else "(B={B}, C={C}, H, W)"
                raise ValueError(f"values[{lvl}] has shape {tuple(value.shape)}; expected {expected.format(B=B, C=C)}")
            # (B, C, D, H, W) -> (B*M, C/M, D, H, W): a view, no transpose copy.
            head_value = value.to(dtype).reshape(B * M, C // M, *value.shape[2:])
            # (B, M, Q, P, n) -> (B*M, 1, Q, P, 3) in 3D, (B*M, Q, P, 2) in 2D: a Q x P grid per head.
            level_grid = grid[:, :, :, lvl].reshape(_grid_shape(B * M, Q, P, n))
            sampled = F.grid_sample(head_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            # (B*M, C/M, [1,] Q, P) * (B*M, 1, Q, P) summed over P -> (B*M, C/M, Q)
            level_out = (sampled.view(B * M, C // M, Q, P) * attn[:, :, :, lvl]).sum(-1)
            out = level_out if out is None else out + level_out
        # (B*M, C/M, Q) -> (B, C, Q) -> (B, Q, C)
        return out.reshape(B, C, Q).transpose(1, 2)


def _sample_points(value: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample(value, grid)`` (trilinear/bilinear, zeros outside), using every CPU thread.

    PyTorch's CPU grid_sample runs its batch items in parallel and each item on one thread,
    so at batch 1 (sliding-window inference, one tile per call) it used one core only. Without
    autograd, each item's points are split into one chunk per thread, sampled from the same map
    (an ``expand``: a stride-0 view, nothing copied) and put back in order: same numbers, about
    ``threads`` times faster on the CPU. With autograd the plain call is kept: the backward of an
    expanded input would allocate one full-size gradient per chunk.

    Args:
        value: (B, C, D, H, W), or (B, C, H, W) in 2D.
        grid: (B, 1, N, P, 3) locations in [-1, 1], ordered (x, y, z); 2D: (B, N, P, 2) ordered (x, y).

    Returns:
        (B, C, 1, N, P); 2D: (B, C, N, P).
    """
    B, N, P, n = grid.shape[0], grid.shape[-3], grid.shape[-2], grid.shape[-1]
    chunks = torch.get_num_threads() // B if value.device.type == "cpu" else 1
    needs_grad = torch.is_grad_enabled() and (value.requires_grad or grid.requires_grad)
    if chunks < 2 or needs_grad or N < 2 * chunks:
        return F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    per_chunk = -(-N // chunks)
    C = value.shape[1]
    # Pad the point list to chunks * per_chunk with a location outside the map (reads zeros).
    padded = F.pad(grid, (0, 0, 0, 0, 0, chunks * per_chunk - N), value=2.0)
    items = []
    for b in range(B):
        split = padded[b].reshape(_grid_shape(chunks, per_chunk, P, n))
        out = F.grid_sample(
            value[b : b + 1].expand(chunks, *value.shape[1:]),
            split,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (chunks, C, [1,] per_chunk, P)
        # (chunks, C, per_chunk, P) -> (C, chunks, per_chunk, P) -> (1, C, N, P) in point order
        ordered = out.reshape(chunks, C, per_chunk, P).permute(1, 0, 2, 3).reshape(1, C, chunks * per_chunk, P)
        items.append(ordered[:, :, :N].reshape(1, C, *([1] * (n - 2)), N, P))
    return torch.cat(items) if B > 1 else items[0]


def deformable_sample_then_project(
    values: Sequence[Tensor], projections: Sequence[Tensor], locations: Tensor, weights: Tensor
) -> Tensor:
    """Like :func:`deformable_sample` on ``conv1x1(values)``, but samples the raw maps first.

    Trilinear (bilinear) sampling and a bias-free 1x1x1 projection commute, so
    ``sample(W @ v) == W @ sample(v)`` exactly. Sampling the raw ``C_l``-channel map and projecting
    the attention-weighted samples never materialises a ``dim``-channel copy of the level, which
    for the full-resolution encoder skip is the dominant memory cost of the FSAD-Transformer.

    Args:
        values: L raw maps, level l (B, C_l, D_l, H_l, W_l) (2D: (B, C_l, H_l, W_l)).
        projections: L projection weights, level l (C, C_l) (bias-free); C divisible by M.
        locations: (B, Q, M, L, P, n) in [0, 1], ordered (x, y, z) (2D: (x, y)).
        weights: (B, Q, M, L, P) attention weights.

    Returns:
        (B, Q, C) in float32 (float64 if the values are float64).
    """
    B, Q, M, L, P, n = locations.shape
    C = projections[0].shape[0]
    dtype = _compute_dtype(values[0].dtype)
    with torch.autocast(device_type=locations.device.type, enabled=False):
        out = None
        for lvl, (value, proj) in enumerate(zip(values, projections, strict=True)):
            C_l = value.shape[1]
            # (B, Q, M, P, n) -> (B, [1,] M*Q, P, n): all heads' points in one grid per sample.
            grid = (
                (2 * locations[:, :, :, lvl].to(dtype) - 1).permute(0, 2, 1, 3, 4).reshape(_grid_shape(B, M * Q, P, n))
            )
            sampled = _sample_points(value.to(dtype), grid)
            # (B, C_l, [1,] M*Q, P) -> (B, C_l, M, Q, P); weight by attention and sum over P first.
            attn = weights[:, :, :, lvl].to(dtype).permute(0, 2, 1, 3)  # (B, Q, M, P) -> (B, M, Q, P)
            pooled = (sampled.view(B, C_l, M, Q, P) * attn[:, None]).sum(-1)  # (B, C_l, M, Q)
            # Head m uses rows m*C/M ... of the projection: (C, C_l) -> (M, C/M, C_l).
            head_proj = proj.to(dtype).view(M, C // M, C_l)
            level_out = torch.einsum("bcmq,mhc->bqmh", pooled, head_proj).reshape(B, Q, C)
            out = level_out if out is None else out + level_out
        return out


def fibonacci_directions(count: int) -> Tensor:
    """``count`` well-spread unit directions on the sphere, each scaled so its max |component| = 1.

    Points of a Fibonacci lattice (golden-angle spiral), ordered (x, y, z). Scaling to max-abs 1
    (as Deformable DETR does for its 2D head directions) makes point p of a head start p+1 voxels
    away along the direction's dominant axis.

    Returns:
        (count, 3) float32.
    """
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / count
    r = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    return (dirs / dirs.abs().amax(dim=-1, keepdim=True)).float()


def circle_directions(count: int) -> Tensor:
    """Deformable DETR's 2D head directions: angles ``2 pi m / count``, ``(cos, sin)`` scaled to max |component| 1.

    Ordered (x, y), as in Deformable DETR's ``MSDeformAttn._reset_parameters``.

    Returns:
        (count, 2) float32.
    """
    thetas = torch.arange(count, dtype=torch.float32) * (2.0 * math.pi / count)
    dirs = torch.stack([thetas.cos(), thetas.sin()], dim=-1)
    return dirs / dirs.abs().amax(dim=-1, keepdim=True)


def head_directions(count: int, spatial_dims: int) -> Tensor:
    """Initial sampling direction of each head: (count, spatial_dims), ordered (x, y[, z]).

    Raises:
        ValueError: unless ``spatial_dims`` is 2 or 3.
    """
    if spatial_dims == 3:
        return fibonacci_directions(count)
    if spatial_dims == 2:
        return circle_directions(count)
    raise ValueError(f"spatial_dims is {spatial_dims!r}; deformable attention is 2D or 3D (expected 2 or 3)")


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention over 3D volumes or 2D images.

    Args:
        dim: model width C of queries and outputs (divisible by ``heads``).
        heads: number of heads M.
        levels: number of value levels L.
        points: sampling points P per head and level.
        value_channels: channels of each value level's input map (length L); each level gets its
            own bias-free 1x1x1 (2D: 1x1) ``Conv(value_channels[l], dim)`` value projection. (A value bias
            would only add ``b * sum(attention * in-bounds)``, almost a constant that
            ``output_proj``'s bias already provides; without it projection and sampling commute.)
        value_path: ``"auto"`` samples a level before projecting it when that stores less
            (large, low-channel levels such as the full-resolution skip) and projects first
            otherwise; ``"project_first"`` / ``"sample_first"`` force one path (both are exact).
        spatial_dims: n, 3 for (D, H, W) value maps and (x, y, z) points, 2 for (H, W) maps and (x, y)
            points (Deformable DETR's original). Sets the width of ``sampling_offsets`` (M*L*P*n) and
            the value projections' conv type.

    Raises:
        ValueError: if ``dim`` is not divisible by ``heads``, a count is < 1, ``value_channels``
            does not have ``levels`` entries, or ``spatial_dims`` is not 2 or 3.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        levels: int,
        points: int,
        value_channels: Sequence[int],
        value_path: str = "auto",
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if value_path not in VALUE_PATHS:
            raise ValueError(f"value_path is {value_path!r}; expected one of {VALUE_PATHS}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims is {spatial_dims!r}; deformable attention is 2D or 3D (expected 2 or 3)")
        self.value_path = value_path
        if min(dim, heads, levels, points) < 1:
            raise ValueError(f"dim, heads, levels and points must be >= 1, got {dim}, {heads}, {levels}, {points}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if len(value_channels) != levels:
            raise ValueError(f"value_channels has {len(value_channels)} entries, expected one per level ({levels})")
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.spatial_dims = spatial_dims
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * spatial_dims)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.ModuleList(conv(c, dim, kernel_size=1, bias=False) for c in value_channels)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's init, with 3D head directions from a Fibonacci sphere (2D: DETR's circle).

        Offsets start at ``(p + 1) * direction_m`` voxels for point p of head m on every level,
        attention starts uniform over L*P, projections are Xavier-uniform with zero bias.
        """
        M, L, P, n = self.heads, self.levels, self.points, self.spatial_dims
        nn.init.zeros_(self.sampling_offsets.weight)
        scale = torch.arange(1, P + 1, dtype=torch.float32)[None, None, :, None]  # (1, 1, P, 1)
        bias = head_directions(M, n)[:, None, None, :] * scale  # (M, 1, P, n)
        self.sampling_offsets.bias.copy_(bias.expand(M, L, P, n).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in [*self.value_proj, self.output_proj]:
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, values: Sequence[Tensor]) -> Tensor:
        """Attend from each query to P points per head on every value level.

        Args:
            query: (B, Q, C) queries (positional embedding already added).
            reference_points: (B or 1, Q, n) in [0, 1], ordered (x, y, z) = (w, h, d) (2D: (x, y) =
                (w, h)); the same normalised point is used on every level.
            values: L tensors, level l of shape (B, C_l, D_l, H_l, W_l) (2D: (B, C_l, H_l, W_l)) with
                C_l = value_channels[l].

        Returns:
            (B, Q, C).

        Raises:
            ValueError: on a wrong number of levels or mismatched shapes.
        """
        B, Q, C = query.shape
        M, L, P, n = self.heads, self.levels, self.points, self.spatial_dims
        if C != self.dim:
            raise ValueError(f"query has {C} channels, expected dim={self.dim}")
        if len(values) != L:
            raise ValueError(f"got {len(values)} value levels, expected {L}")
        if (
            reference_points.dim() != 3
            or reference_points.shape[1:] != (Q, n)
            or reference_points.shape[0] not in (1, B)
        ):
            raise ValueError(
                f"reference_points has shape {tuple(reference_points.shape)}, expected ({B} or 1, {Q}, {n})"
            )
        axes = "D, H, W" if n == 3 else "H, W"
        for lvl, (value, proj) in enumerate(zip(values, self.value_proj, strict=True)):
            if value.dim() != 2 + n or value.shape[0] != B or value.shape[1] != proj.in_channels:
                raise ValueError(
                    f"values[{lvl}] has shape {tuple(value.shape)}, expected (B={B}, C={proj.in_channels}, {axes})"
                )
        sample_first = [self._sample_first(v, Q) for v in values]
        dtype = _compute_dtype(query.dtype)
        with torch.autocast(device_type=query.device.type, enabled=False):
            q = query.to(dtype)
            offsets = F.linear(q, self.sampling_offsets.weight.to(dtype), self.sampling_offsets.bias.to(dtype))
            logits = F.linear(q, self.attention_weights.weight.to(dtype), self.attention_weights.bias.to(dtype))
            weights = logits.view(B, Q, M, L * P).softmax(-1).view(B, Q, M, L, P)
            # Offsets are in voxels of the level sampled: divide by (W_l, H_l, D_l), i.e. (x, y, z) order
            # (2D: (W_l, H_l)), the array's spatial sizes reversed.
            sizes = [tuple(reversed(v.shape[2:])) for v in values]
            normaliser = torch.tensor(sizes, dtype=dtype, device=query.device)  # (L, n)
            # (B, Q, 1, 1, 1, n) + (B, Q, M, L, P, n) / (1, 1, 1, L, 1, n)
            locations = (
                reference_points.to(dtype)[:, :, None, None, None, :]
                + offsets.view(B, Q, M, L, P, n) / normaliser[None, None, None, :, None, :]
            )
        out = None
        for first, levels in (
            (False, [i for i in range(L) if not sample_first[i]]),
            (True, [i for i in range(L) if sample_first[i]]),
        ):
            if not levels:
                continue
            loc, w = locations[:, :, :, levels], weights[:, :, :, levels]
            if first:
                projections = [self.value_proj[i].weight.flatten(1) for i in levels]  # (C, C_l)
                part = deformable_sample_then_project([values[i] for i in levels], projections, loc, w)
            else:
                # Each level (B, C_l, D_l, H_l, W_l) -> (B, C, D_l, H_l, W_l), channel-first.
                part = deformable_sample([self.value_proj[i](values[i]) for i in levels], loc, w)
            out = part if out is None else out + part
        return self.output_proj(out.to(query.dtype))

    def _sample_first(self, value: Tensor, num_queries: int) -> bool:
        """Whether to sample this level before projecting it (fewer stored floats per sample)."""
        if self.value_path != "auto":
            return self.value_path == "sample_first"
        voxels = math.prod(value.shape[2:])
        sampled = num_queries * self.heads * self.points
        # sample-first stores C_l * M * Q * P samples; project-first stores dim * (DHW + Q * P).
        return value.shape[1] * sampled < self.dim * (voxels + num_queries * self.points)


MSDeformAttn3D = MSDeformAttn
"""The name this module had while it was 3D only (``spatial_dims`` defaults to 3), kept for callers and tests."""


__all__ = [
    "MSDeformAttn",
    "MSDeformAttn3D",
    "VALUE_PATHS",
    "circle_directions",
    "deformable_sample",
    "deformable_sample_then_project",
    "fibonacci_directions",
    "head_directions",
]
