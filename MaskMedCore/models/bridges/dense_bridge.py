"""Dense Transformer skip-connection bridge (the "standard" baseline of MaskMed §3.3).

The paper's first exploration before the FSAD-Transformer (appendix B): full multi-head
self-attention among the voxels of the coarsest encoder stages, post-norm as in Deformable DETR's
encoder (Zhu et al., ICLR 2021) but with dense attention. Same tokens, positional embeddings and
input/output projections as the deformable bridges; attention runs through
``scaled_dot_product_attention``. Its attention is quadratic in the token count (compute always,
memory when the attention matrix is materialised), which is why the paper limits it to the
lowest-resolution stages. ``spatial_dims=2`` runs it on a 2D network's (H, W) stages (issue 13).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from MaskMedCore.layers.transformer_layers import FFNLayer, SelfAttentionLayer
from MaskMedCore.models.bridges.tokens import StageTokens, check_skips


class DenseBridge(nn.Module):
    """Refine the coarsest encoder stages with stacked dense self-attention + FFN layers.

    Args:
        stage_channels: channels C_s of every encoder stage, finest first.
        query_stages: how many of the coarsest stages become tokens (and are replaced).
        dim: token width C (even, >= 6, divisible by ``heads``).
        heads: attention heads M.
        layers: number of (self-attention, FFN) layers.
        ffn_dim: FFN hidden width.
        dropout: dropout rate.
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
        layers: int,
        ffn_dim: int,
        dropout: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.stage_channels = tuple(stage_channels)
        self.spatial_dims = spatial_dims
        self.tokens = StageTokens(stage_channels, query_stages, dim, spatial_dims)
        self.attn_layers = nn.ModuleList(SelfAttentionLayer(dim, heads, dropout) for _ in range(layers))
        self.ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim, dropout) for _ in range(layers))

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
        x, pos, _, shapes = self.tokens.encode(skips)  # x: (B, Q, C), pos: (1, Q, C)
        for attn, ffn in zip(self.attn_layers, self.ffn_layers, strict=True):
            x = ffn(attn(x, pos))
        return self.tokens.decode(x, shapes, skips)


__all__ = ["DenseBridge"]
