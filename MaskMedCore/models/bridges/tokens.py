"""Encoder stages <-> transformer tokens, shared by every skip-connection bridge.

The bridges of MaskMed §3.3 (standard Transformer, Deformable-DETR encoder and the
FSAD-Transformer, appendix B) all take their queries from the voxels of the coarsest encoder
stages, as Deformable DETR's encoder does with its input levels (Zhu et al., ICLR 2021) and
Mask2Former's pixel decoder does with res3-res5:

- per query stage a 1x1x1 ``Conv3d(C_s, dim) + GroupNorm`` input projection, flattened in
  (D, H, W) order and concatenated over the stages (finest query stage first);
- a positional embedding per token: the 3D sine encoding of its stage's grid plus a learnable
  per-stage embedding;
- a reference point per token: its own voxel centre, ordered (x, y, z) = (w, h, d) in [0, 1];
- per query stage a 1x1x1 ``Conv3d(dim, C_s)`` output projection back to the stage's channels.

A 2D network's stages are (H, W) maps: the same with ``Conv2d``, the 2D sine encoding and (x, y) pixel
centres (``spatial_dims=2``; issue 13).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import spatial_ops
from MaskMedCore.layers.position_encoding import sine_position_encoding

SpatialShape = tuple[int, ...]
"""(D, H, W) of a 3D grid or (H, W) of a 2D one."""


def voxel_centres(
    spatial: SpatialShape, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised voxel (pixel) centres of a (D, H, W) or (H, W) grid, flattened in array order.

    Args:
        spatial: grid size (D, H, W), or (H, W).
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        (D*H*W, 3) in (0, 1), ordered (x, y, z) = (w, h, d) (2D: (H*W, 2) ordered (x, y) = (w, h)):
        ``(i + 0.5) / S`` per axis.
    """
    axes = [(torch.arange(s, device=device, dtype=dtype) + 0.5) / s for s in spatial]  # array order
    grids = torch.meshgrid(*axes, indexing="ij")
    # Array order (z, y, x) -> grid_sample's point order (x, y, z): reverse the axes.
    return torch.stack(grids[::-1], dim=-1).reshape(math.prod(spatial), len(spatial))


def check_skips(skips: Sequence[Tensor], stage_channels: Sequence[int], spatial_dims: int = 3) -> None:
    """Raise ``ValueError`` unless ``skips`` are one (B, C_s, D, H, W) map per stage ((B, C_s, H, W) with
    ``spatial_dims`` 2) with the planned channels and batch."""
    if len(skips) != len(stage_channels):
        raise ValueError(f"got {len(skips)} encoder skips, the bridge was built for {len(stage_channels)} stages")
    batch = skips[0].shape[0]
    axes = "D, H, W" if spatial_dims == 3 else "H, W"
    for s, (skip, channels) in enumerate(zip(skips, stage_channels, strict=True)):
        if skip.dim() != 2 + spatial_dims or skip.shape[1] != channels or skip.shape[0] != batch:
            raise ValueError(
                f"skips[{s}] has shape {tuple(skip.shape)}, expected (B={batch}, C={channels}, {axes}) "
                f"as given by stage_channels (a {spatial_dims}D bridge)"
            )


class StageTokens(nn.Module):
    """Input/output projections between the coarsest ``query_stages`` stages and ``dim``-wide tokens.

    Args:
        stage_channels: channels C_s of every encoder stage, finest first.
        query_stages: how many of the coarsest stages become tokens (1 <= query_stages <= stages).
        dim: token width C.
        spatial_dims: 3 for (D, H, W) stages, 2 for (H, W) stages.

    Raises:
        ValueError: if ``query_stages`` is out of range, ``dim`` does not fit the sine encoding, or
            ``spatial_dims`` is not 2 or 3.
    """

    def __init__(self, stage_channels: Sequence[int], query_stages: int, dim: int, spatial_dims: int = 3) -> None:
        super().__init__()
        if not 1 <= query_stages <= len(stage_channels):
            raise ValueError(
                f"query_stages must be in [1, {len(stage_channels)}] (the stage count), got {query_stages}"
            )
        conv = spatial_ops(spatial_dims).conv  # raises unless 2 or 3
        if dim % 2 or dim < 2 * spatial_dims:
            raise ValueError(
                f"dim must be even and >= {2 * spatial_dims} for the {spatial_dims}D sine position encoding, got {dim}"
            )
        self.spatial_dims = spatial_dims
        self.first = len(stage_channels) - query_stages  # index of the finest query stage
        query_channels = list(stage_channels)[self.first :]
        groups = math.gcd(32, dim)  # GroupNorm(32) as in Mask2Former, fewer groups for narrow dims
        self.in_proj = nn.ModuleList(
            nn.Sequential(conv(c, dim, kernel_size=1), nn.GroupNorm(groups, dim)) for c in query_channels
        )
        self.out_proj = nn.ModuleList(conv(dim, c, kernel_size=1) for c in query_channels)
        self.level_embed = nn.Parameter(torch.empty(query_stages, dim))
        for conv in [*(seq[0] for seq in self.in_proj), *self.out_proj]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_embed)

    def encode(self, skips: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[SpatialShape]]:
        """Project and flatten the query stages.

        Args:
            skips: every encoder stage, finest first; skips[s]: (B, C_s, D_s, H_s, W_s) (2D: (B, C_s, H_s, W_s)).

        Returns:
            tokens: (B, Q, C) with Q = sum of D_s*H_s*W_s (2D: H_s*W_s) over the query stages.
            pos: (1, Q, C) positional embedding (sine + per-stage embedding).
            reference_points: (1, Q, n) voxel centres in [0, 1], ordered (x, y, z) (2D: (x, y)).
            shapes: (D_s, H_s, W_s) (2D: (H_s, W_s)) of each query stage, finest first.
        """
        tokens, pos, refs, shapes = [], [], [], []
        for i, proj in enumerate(self.in_proj):
            skip = skips[self.first + i]
            spatial = tuple(skip.shape[2:])
            x = proj(skip)  # (B, C_s, D, H, W) -> (B, C, D, H, W)
            tokens.append(x.flatten(2).transpose(1, 2))  # (B, C, DHW) -> (B, DHW, C)
            pos.append(sine_position_encoding(spatial, x.shape[1], skip.device) + self.level_embed[i])
            refs.append(voxel_centres(spatial, skip.device))
            shapes.append(spatial)
        return torch.cat(tokens, 1), torch.cat(pos, 0)[None], torch.cat(refs, 0)[None], shapes

    @staticmethod
    def to_maps(tokens: Tensor, shapes: Sequence[SpatialShape]) -> list[Tensor]:
        """Split tokens back into one channel-first map per query stage.

        Args:
            tokens: (B, Q, C).
            shapes: (D_s, H_s, W_s) (2D: (H_s, W_s)) per query stage, in token order.

        Returns:
            One (B, C, D_s, H_s, W_s) (2D: (B, C, H_s, W_s)) tensor per query stage.
        """
        B, _, C = tokens.shape
        chunks = tokens.split([math.prod(s) for s in shapes], dim=1)
        # (B, DHW, C) -> (B, C, DHW) -> (B, C, D, H, W)
        return [t.transpose(1, 2).reshape(B, C, *s) for t, s in zip(chunks, shapes, strict=True)]

    def decode(self, tokens: Tensor, shapes: Sequence[SpatialShape], skips: Sequence[Tensor]) -> list[Tensor]:
        """Project tokens back to the query stages' channels and put them in place of those skips.

        Args:
            tokens: (B, Q, C) refined tokens.
            shapes: (D_s, H_s, W_s) (2D: (H_s, W_s)) per query stage, as returned by :meth:`encode`.
            skips: the original encoder stages, finest first.

        Returns:
            A new list like ``skips``: entries before the query stages are the same objects, the
            query stages are replaced by (B, C_s, D_s, H_s, W_s) (2D: (B, C_s, H_s, W_s)) refined maps.
        """
        refined = [proj(m) for proj, m in zip(self.out_proj, self.to_maps(tokens, shapes), strict=True)]
        return list(skips[: self.first]) + refined


__all__ = ["SpatialShape", "StageTokens", "check_skips", "voxel_centres"]
