"""Cross-attention memory of one decoder stage (MaskMed §3.2).

"To reduce memory consumption, especially for high-resolution features, we apply spatial average
pooling on F to reduce its spatial dimensions before use." The pooled grid is the smallest
uniform reduction that leaves at most ``max_tokens`` tokens, so the head's cost is bounded at
every resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.layers.position_encoding import sine_position_encoding_3d


def pooled_grid(spatial: tuple[int, int, int], max_tokens: int) -> tuple[int, int, int]:
    """Grid (D', H', W') obtained by an integer pooling factor k on every axis with D'H'W' <= max_tokens.

    Args:
        spatial: (D, H, W) of the stage.
        max_tokens: upper bound on D'*H'*W'.
    """
    k = 1
    while True:
        grid = tuple(max(1, math.ceil(s / k)) for s in spatial)
        if math.prod(grid) <= max_tokens:
            return grid  # type: ignore[return-value]
        k += 1


class StageMemory(nn.Module):
    """Pools a stage's features to bounded tokens and projects them to the head's width E.

    Args:
        in_channels: C_s of the stage.
        dim: E.
        max_tokens: token budget after pooling.
    """

    def __init__(self, in_channels: int, dim: int, max_tokens: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)
        self.level_embed = nn.Parameter(torch.zeros(dim))
        self.max_tokens = max_tokens
        self.dim = dim
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        nn.init.normal_(self.level_embed)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, tuple[int, int, int]]:
        """features: (B, C_s, D, H, W).

        Returns:
            memory: (B, N, E) tokens (N = D'H'W' <= max_tokens), level embedding added.
            pos: (1, N, E) sine positional encoding of the pooled grid.
            grid: (D', H', W').
        """
        grid = pooled_grid(tuple(features.shape[2:]), self.max_tokens)
        pooled = features if grid == tuple(features.shape[2:]) else F.adaptive_avg_pool3d(features, grid)
        tokens = pooled.flatten(2).transpose(1, 2)  # (B, C_s, N) -> (B, N, C_s)
        memory = self.proj(tokens) + self.level_embed
        pos = sine_position_encoding_3d(grid, self.dim, device=features.device).to(memory.dtype)[None]
        return memory, pos, grid
