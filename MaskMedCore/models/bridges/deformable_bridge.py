"""Deformable skip-connection bridges: the FSAD-Transformer and a Deformable-DETR encoder.

MaskMed §3.3 and appendix B (Fig. 6). Queries are the voxels of the coarsest ``query_stages``
encoder stages. Each layer is post-norm, as in Deformable DETR's encoder (Zhu et al., ICLR 2021)
and the paper's Fig. 6::

    x = LayerNorm(x + Dropout(MSDeformAttn(query=x + pos, reference_points, values)))
    x = LayerNorm(x + FFN(x))

The two variants differ only in their value levels:

- ``full_scale=True`` (the FSAD-Transformer, "fsad"): values are ALL encoder stages, down to full
  resolution. Value levels that are query stages read the current token state; the others read
  the raw encoder skip through the attention's own 1x1x1 value projection. Memory stays linear
  in voxels because values are only ever sampled at Q*M*L*P points.
- ``full_scale=False`` ("deformable", the paper's intermediate step): values are only the query
  stages, i.e. a plain Deformable-DETR encoder over the coarsest stages.

With ``spatial_dims=2`` the same bridge runs on a 2D network's (H, W) stages (bilinear sampling,
(x, y) points; issue 13).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from MaskMedCore.layers.deformable_attention import MSDeformAttn
from MaskMedCore.layers.transformer_layers import FFNLayer
from MaskMedCore.models.bridges.tokens import StageTokens, check_skips


class DeformableEncoderLayer(nn.Module):
    """One post-norm deformable encoder layer (deformable attention, then FFN).

    Args:
        dim: token width C.
        heads: attention heads M.
        points: sampling points P per head and level.
        value_channels: channels of each value level's input map (length L).
        ffn_dim: FFN hidden width.
        dropout: dropout after attention and inside the FFN.
        spatial_dims: 3 for (D, H, W) value maps, 2 for (H, W) ones.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        points: int,
        value_channels: Sequence[int],
        ffn_dim: int,
        dropout: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, heads, len(value_channels), points, value_channels, spatial_dims=spatial_dims)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.ffn = FFNLayer(dim, ffn_dim, dropout)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, values: Sequence[Tensor]) -> Tensor:
        """Refine the tokens.

        Args:
            x: (B, Q, C) tokens.
            pos: (1 or B, Q, C) positional embedding.
            reference_points: (1 or B, Q, n) in [0, 1], ordered (x, y, z) (2D: (x, y)).
            values: L tensors, level l of shape (B, C_l, D_l, H_l, W_l) (2D: (B, C_l, H_l, W_l)).

        Returns:
            (B, Q, C).
        """
        x = self.norm(x + self.drop(self.attn(x + pos, reference_points, values)))
        return self.ffn(x)


class DeformableBridge(nn.Module):
    """Refine the coarsest encoder stages with stacked deformable attention (3D, or 2D).

    Args:
        stage_channels: channels C_s of every encoder stage, finest first.
        query_stages: how many of the coarsest stages provide queries (and are replaced).
        dim: token width C (even, >= 6, divisible by ``heads``).
        heads: attention heads M.
        points: sampling points P per head and value level.
        layers: number of encoder layers.
        ffn_dim: FFN hidden width.
        dropout: dropout rate.
        full_scale: True for the FSAD-Transformer (values = every stage), False for a
            Deformable-DETR encoder (values = the query stages only).
        spatial_dims: 3 for (D, H, W) encoder stages, 2 for (H, W) ones.

    Raises:
        ValueError: if ``query_stages`` is out of range, ``layers`` < 1, ``dim``/``heads`` do not fit, or
            ``spatial_dims`` is not 2 or 3.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        query_stages: int,
        dim: int,
        heads: int,
        points: int,
        layers: int,
        ffn_dim: int,
        dropout: float = 0.0,
        full_scale: bool = True,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.stage_channels = tuple(stage_channels)
        self.full_scale = full_scale
        self.spatial_dims = spatial_dims
        self.tokens = StageTokens(stage_channels, query_stages, dim, spatial_dims)
        first = self.tokens.first
        # Value levels: every stage (FSAD) or only the query stages; query stages carry dim channels.
        self.value_stages = tuple(range(0 if full_scale else first, len(stage_channels)))
        value_channels = [dim if s >= first else self.stage_channels[s] for s in self.value_stages]
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, heads, points, value_channels, ffn_dim, dropout, spatial_dims)
            for _ in range(layers)
        )

    def forward(self, skips: list[Tensor]) -> list[Tensor]:
        """Refine the query stages.

        Args:
            skips: encoder stage outputs, finest first; skips[s]: (B, C_s, D_s, H_s, W_s)
                (2D: (B, C_s, H_s, W_s)).

        Returns:
            A new list of the same shapes: the last ``query_stages`` entries are the refined
            maps, the others are the input tensors themselves.

        Raises:
            ValueError: if the skips do not match ``stage_channels`` or the bridge's dimensionality.
        """
        check_skips(skips, self.stage_channels, self.spatial_dims)
        first = self.tokens.first
        x, pos, ref, shapes = self.tokens.encode(skips)
        for layer in self.layers:
            # Query stages read the current token state as (B, C, D, H, W); other stages the raw skip.
            token_maps = StageTokens.to_maps(x, shapes)
            values = [token_maps[s - first] if s >= first else skips[s] for s in self.value_stages]
            x = layer(x, pos, ref, values)
        return self.tokens.decode(x, shapes, skips)


__all__ = ["DeformableBridge", "DeformableEncoderLayer"]
