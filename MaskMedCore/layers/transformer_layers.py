"""Dense transformer sub-layers: multi-head attention, self-/cross-attention and FFN blocks, MLP.

Post-norm (residual add, then LayerNorm) as in Mask2Former's decoder and Deformable DETR's
encoder. Layout is batch-first, ``(B, N, C)``. Attention runs through
``torch.nn.functional.scaled_dot_product_attention`` so fused kernels are used where available.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _xavier_(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an optional block mask.

    Args:
        dim: model width C (divisible by ``heads``).
        heads: number of heads M.
        dropout: attention-probability dropout (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        return x.view(B, N, self.heads, C // self.heads).transpose(1, 2)  # (B, N, C) -> (B, M, N, C/M)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, blocked: Tensor | None = None) -> Tensor:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: (B, Nq, C).
            key: (B, Nk, C).
            value: (B, Nk, C).
            blocked: optional (B, Nq, Nk) or (B, M, Nq, Nk) bool, True where attention is NOT
                allowed (Mask2Former's convention). A row must not be fully blocked.

        Returns:
            (B, Nq, C).
        """
        B, Nq, C = query.shape
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        allowed = None
        if blocked is not None:
            allowed = ~(blocked.unsqueeze(1) if blocked.dim() == 3 else blocked)  # SDPA: True = attend
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, C))


class SelfAttentionLayer(nn.Module):
    """``x = LayerNorm(x + Attn(q=k=x+pos, v=x))``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        _xavier_(self)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        """x: (B, N, C); pos: (B or 1, N, C) positional embedding added to queries and keys."""
        qk = x if pos is None else x + pos
        return self.norm(x + self.drop(self.attn(qk, qk, x)))


class CrossAttentionLayer(nn.Module):
    """``x = LayerNorm(x + Attn(q=x+query_pos, k=memory+memory_pos, v=memory, blocked))``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        _xavier_(self)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        query_pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
        blocked: Tensor | None = None,
    ) -> Tensor:
        """x: (B, Q, C) queries; memory: (B, N, C); blocked: (B, Q, N) bool, True = masked out."""
        q = x if query_pos is None else x + query_pos
        k = memory if memory_pos is None else memory + memory_pos
        return self.norm(x + self.drop(self.attn(q, k, memory, blocked)))


class FFNLayer(nn.Module):
    """``x = LayerNorm(x + Linear(ReLU(Linear(x))))``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        _xavier_(self)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        return self.norm(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


class MLP(nn.Module):
    """``n_layers`` Linear layers with ReLU between them and none after the last."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, n_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def unblock_empty_rows(blocked: Tensor) -> Tensor:
    """Allow every key for queries whose mask blocks all keys (Mask2Former's empty-mask fix).

    Without it a fully blocked row makes the softmax run over -inf only, i.e. NaN.

    Args:
        blocked: (..., Nq, Nk) bool, True = not allowed.

    Returns:
        The same mask with fully blocked rows set to all-False.
    """
    return blocked & ~blocked.all(dim=-1, keepdim=True)


__all__ = [
    "MultiHeadAttention",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "MLP",
    "unblock_empty_rows",
]
