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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from MaskMedCore.layers.position_encoding import sine_position_encoding_3d

Shape3D = tuple[int, int, int]


def voxel_centres(spatial: Shape3D, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised voxel centres of a (D, H, W) grid, flattened in array order.

    Args:
        spatial: grid size (D, H, W).
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        (D*H*W, 3) in (0, 1), ordered (x, y, z) = (w, h, d): ``(i + 0.5) / S`` per axis.
    """
    D, H, W = spatial
    z, y, x = ((torch.arange(s, device=device, dtype=dtype) + 0.5) / s for s in (D, H, W))
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1).reshape(D * H * W, 3)


def check_skips(skips: Sequence[Tensor], stage_channels: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``skips`` are one 5-D map per stage with the planned channels and batch."""
    if len(skips) != len(stage_channels):
        raise ValueError(f"got {len(skips)} encoder skips, the bridge was built for {len(stage_channels)} stages")
    batch = skips[0].shape[0]
    for s, (skip, channels) in enumerate(zip(skips, stage_channels, strict=True)):
        if skip.dim() != 5 or skip.shape[1] != channels or skip.shape[0] != batch:
            raise ValueError(
                f"skips[{s}] has shape {tuple(skip.shape)}, expected (B={batch}, C={channels}, D, H, W) "
                f"as given by stage_channels"
            )


class StageTokens(nn.Module):
    """Input/output projections between the coarsest ``query_stages`` stages and ``dim``-wide tokens.

    Args:
        stage_channels: channels C_s of every encoder stage, finest first.
        query_stages: how many of the coarsest stages become tokens (1 <= query_stages <= stages).
        dim: token width C.

    Raises:
        ValueError: if ``query_stages`` is out of range.
    """

    def __init__(self, stage_channels: Sequence[int], query_stages: int, dim: int) -> None:
        super().__init__()
        if not 1 <= query_stages <= len(stage_channels):
            raise ValueError(
                f"query_stages must be in [1, {len(stage_channels)}] (the stage count), got {query_stages}"
            )
        if dim % 2 or dim < 6:
            raise ValueError(f"dim must be even and >= 6 for the 3D sine position encoding, got {dim}")
        self.first = len(stage_channels) - query_stages  # index of the finest query stage
        query_channels = list(stage_channels)[self.first :]
        groups = math.gcd(32, dim)  # GroupNorm(32) as in Mask2Former, fewer groups for narrow dims
        self.in_proj = nn.ModuleList(
            nn.Sequential(nn.Conv3d(c, dim, kernel_size=1), nn.GroupNorm(groups, dim)) for c in query_channels
        )
        self.out_proj = nn.ModuleList(nn.Conv3d(dim, c, kernel_size=1) for c in query_channels)
        self.level_embed = nn.Parameter(torch.empty(query_stages, dim))
        for conv in [*(seq[0] for seq in self.in_proj), *self.out_proj]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_embed)

    def encode(self, skips: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[Shape3D]]:
        """Project and flatten the query stages.

        Args:
            skips: every encoder stage, finest first; skips[s]: (B, C_s, D_s, H_s, W_s).

        Returns:
            tokens: (B, Q, C) with Q = sum of D_s*H_s*W_s over the query stages.
            pos: (1, Q, C) positional embedding (sine + per-stage embedding).
            reference_points: (1, Q, 3) voxel centres in [0, 1], ordered (x, y, z).
            shapes: (D_s, H_s, W_s) of each query stage, finest first.
        """
        tokens, pos, refs, shapes = [], [], [], []
        for i, proj in enumerate(self.in_proj):
            skip = skips[self.first + i]
            B, _, D, H, W = skip.shape
            x = proj(skip)  # (B, C_s, D, H, W) -> (B, C, D, H, W)
            tokens.append(x.flatten(2).transpose(1, 2))  # (B, C, DHW) -> (B, DHW, C)
            pos.append(sine_position_encoding_3d((D, H, W), x.shape[1], skip.device) + self.level_embed[i])
            refs.append(voxel_centres((D, H, W), skip.device))
            shapes.append((D, H, W))
        return torch.cat(tokens, 1), torch.cat(pos, 0)[None], torch.cat(refs, 0)[None], shapes

    @staticmethod
    def to_maps(tokens: Tensor, shapes: Sequence[Shape3D]) -> list[Tensor]:
        """Split tokens back into one channel-first map per query stage.

        Args:
            tokens: (B, Q, C).
            shapes: (D_s, H_s, W_s) per query stage, in token order.

        Returns:
            One (B, C, D_s, H_s, W_s) tensor per query stage.
        """
        B, _, C = tokens.shape
        chunks = tokens.split([D * H * W for D, H, W in shapes], dim=1)
        # (B, DHW, C) -> (B, C, DHW) -> (B, C, D, H, W)
        return [t.transpose(1, 2).reshape(B, C, *s) for t, s in zip(chunks, shapes, strict=True)]

    def decode(self, tokens: Tensor, shapes: Sequence[Shape3D], skips: Sequence[Tensor]) -> list[Tensor]:
        """Project tokens back to the query stages' channels and put them in place of those skips.

        Args:
            tokens: (B, Q, C) refined tokens.
            shapes: (D_s, H_s, W_s) per query stage, as returned by :meth:`encode`.
            skips: the original encoder stages, finest first.

        Returns:
            A new list like ``skips``: entries before the query stages are the same objects, the
            query stages are replaced by (B, C_s, D_s, H_s, W_s) refined maps.
        """
        refined = [proj(m) for proj, m in zip(self.out_proj, self.to_maps(tokens, shapes), strict=True)]
        return list(skips[: self.first]) + refined


__all__ = ["StageTokens", "check_skips", "voxel_centres"]
