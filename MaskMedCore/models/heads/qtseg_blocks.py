"""QTSeg's decoder blocks in 2D and 3D: SAM, CAB, token/feature attention, the dual-mix attention stage.

Implements QTSeg (Tran et al., arXiv 2412.17241) §3 "Dual-Mix Attention decoder", after the official
code (github.com/tpnam0901/QTSeg, ``src/networks/decoder/modules.py``), written for MaskMed's 2D and
3D feature maps ``(B, C, *S)`` with ``S = (H, W)`` or ``(D, H, W)``. ``QTSegHead`` (qtseg_head.py)
puts them together; its module docstring lists what follows QTSeg and what departs.

- ``SpatialAttention`` (SAM): ``x * sigmoid(conv([mean_c x, max_c x])) + x``, a 7-wide kernel on every
  axis (7x7 in 2D, 7x7x7 in 3D: 2 -> 1 channels, 686 weights, cheap next to the UNet's convs).
- ``ChannelAttention`` (CAB, DANet's channel attention): ``gamma * softmax(max - X X^T) X + X`` with
  a C x C affinity (never quadratic in voxels) and a learnable ``gamma`` initialised to 0.
- ``TokenFeatureAttention``: SAM's attention with separate query and key/value widths and an
  internal width (QTSeg's attention downsample rate).
- ``DualMixAttentionLayer`` (a DMA block) and ``DualMixAttentionStage`` (depth layers + the final
  token -> feature attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
LINEAR_MODE = {2: "bilinear", 3: "trilinear"}
"""``F.interpolate`` mode for linear resampling of a 2D / 3D feature map."""
SAM_KERNEL = 7


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every location of a (B, C, *S) map (SAM's ``LayerNorm2d``, any dims)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> (B, C, *S)."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class SpatialAttention(nn.Module):
    """SAM: ``x * sigmoid(conv([mean_c(x), max_c(x)])) + x`` (QTSeg's ``SpatialAttentionModule``).

    Args:
        spatial_dims: 2 or 3.
    """

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.conv = CONV[spatial_dims](2, 1, SAM_KERNEL, padding=SAM_KERNEL // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> (B, C, *S)."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (B, 2, *S)
        return x * torch.sigmoid(self.conv(pooled)) + x


class ChannelAttention(nn.Module):
    """CAB: DANet's channel attention ``gamma * (A X) + X``, ``A = softmax(max_j E - E)``, ``E = X X^T``.

    The C x C affinity sums over every voxel, so it is computed in float32 with autocast off (under
    fp16 a full-resolution 3D sum would overflow). ``gamma`` starts at 0: the block starts as the
    identity, and on the first step only ``gamma`` itself gets a gradient from the attention branch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> (B, C, *S)."""
        B, C = x.shape[:2]
        flat = x.flatten(2)  # (B, C, N)
        with torch.autocast(device_type=x.device.type, enabled=False):
            f32 = flat.float()
            energy = f32 @ f32.transpose(1, 2)  # (B, C, C)
            affinity = (energy.amax(-1, keepdim=True) - energy).softmax(-1)
        out = (affinity.to(flat.dtype) @ flat).view_as(x)  # (B, C, C) @ (B, C, N) -> (B, C, *S)
        return self.gamma.to(x.dtype) * out + x


class TokenFeatureAttention(nn.Module):
    """Multi-head attention between sequences of different widths (SAM's ``Attention``).

    q, k, v are projected to ``internal_dim`` (QTSeg: embedding width / downsample rate 2), the output
    back to ``query_dim``.

    Args:
        query_dim: width of the queries and of the output.
        kv_dim: width of the keys and values.
        internal_dim: projected width (divisible by ``heads``).
        heads: attention heads M.
        dropout: attention-probability dropout (training only).
    """

    def __init__(self, query_dim: int, kv_dim: int, internal_dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if internal_dim % heads:
            raise ValueError(f"internal_dim ({internal_dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(query_dim, internal_dim)
        self.k_proj = nn.Linear(kv_dim, internal_dim)
        self.v_proj = nn.Linear(kv_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, query_dim)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split(self, x: Tensor) -> Tensor:
        B, N, E = x.shape
        return x.view(B, N, self.heads, E // self.heads).transpose(1, 2)  # (B, N, E) -> (B, M, N, E/M)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """query: (B, Nq, query_dim); key, value: (B, Nk, kv_dim) -> (B, Nq, query_dim)."""
        B, Nq, _ = query.shape
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, -1))  # (B, M, Nq, E/M) -> (B, Nq, E)


class DualMixAttentionLayer(nn.Module):
    """One DMA block (QTSeg's ``DMABlock``: ``DualMixAttention`` + token MLP + feature mix).

    1. SAM and CAB refine ``x + pos`` separately.
    2. Token -> feature attention with each refined map as keys/values; both results and the tokens
       are summed, then LayerNorm: the *mixed* tokens.
    3. ``tokens = LayerNorm(MLP(mixed)) + tokens`` (upstream's residual is the block's input tokens).
    4. Feature <- token attention, queries ``SAM + CAB + pos``, keys/values the mixed tokens, added
       to the feature map.

    Args:
        channels: C of the feature map.
        dim: E, token width.
        internal_dim: attention width.
        heads: attention heads.
        ffn_dim: hidden width of the token MLP.
        spatial_dims: 2 or 3.
        dropout: dropout of the attention probabilities and of the residual branches.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        internal_dim: int,
        heads: int,
        ffn_dim: int,
        spatial_dims: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.sam = SpatialAttention(spatial_dims)
        self.cab = ChannelAttention()
        self.sam_token_attn = TokenFeatureAttention(dim, channels, internal_dim, heads, dropout)
        self.cab_token_attn = TokenFeatureAttention(dim, channels, internal_dim, heads, dropout)
        self.mix_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.mlp_norm = nn.LayerNorm(dim)
        self.feature_attn = TokenFeatureAttention(channels, dim, internal_dim, heads, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Refine tokens and features together.

        Args:
            tokens: (B, K, E).
            x: (B, C, *S) features.
            pos: (1, C, *S) positional encoding.

        Returns:
            tokens (B, K, E) and features (B, C, *S).
        """
        B, C = x.shape[:2]
        with_pos = x + pos
        sam = self.sam(with_pos).flatten(2).transpose(1, 2)  # (B, C, *S) -> (B, N, C)
        cab = self.cab(with_pos).flatten(2).transpose(1, 2)
        mixed = (
            tokens + self.drop(self.sam_token_attn(tokens, sam, sam)) + self.drop(self.cab_token_attn(tokens, cab, cab))
        )
        mixed = self.mix_norm(mixed)
        tokens = self.mlp_norm(self.drop(self.mlp(mixed))) + tokens
        query = sam + cab + pos.flatten(2).transpose(1, 2)  # (B, N, C)
        update = self.drop(self.feature_attn(query, mixed, mixed))  # (B, N, C)
        return tokens, x + update.transpose(1, 2).reshape_as(x)


class DualMixAttentionStage(nn.Module):
    """``depth`` DMA blocks, then the final token -> feature attention + LayerNorm (QTSeg's ``DualMixAttentionBlock``).

    The final attention uses the stage's input tokens as the query positional embedding, as SAM and
    QTSeg do: ``tokens = LN(tokens + Attn(q=tokens + tokens_in, k=x + pos, v=x))``.

    Args: as ``DualMixAttentionLayer``, plus ``depth`` (blocks per stage).
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        internal_dim: int,
        heads: int,
        ffn_dim: int,
        depth: int,
        spatial_dims: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DualMixAttentionLayer(channels, dim, internal_dim, heads, ffn_dim, spatial_dims, dropout)
            for _ in range(depth)
        )
        self.final_attn = TokenFeatureAttention(dim, channels, internal_dim, heads, dropout)
        self.final_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """tokens: (B, K, E); x: (B, C, *S); pos: (1, C, *S) -> tokens (B, K, E), features (B, C, *S)."""
        tokens_in = tokens
        for layer in self.layers:
            tokens, x = layer(tokens, x, pos)
        seq = x.flatten(2).transpose(1, 2)  # (B, C, *S) -> (B, N, C)
        key = seq + pos.flatten(2).transpose(1, 2)
        tokens = self.final_norm(tokens + self.drop(self.final_attn(tokens + tokens_in, key, seq)))
        return tokens, x
