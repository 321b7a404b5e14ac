"""Cross-attention memory of one decoder stage (MaskMed §3.2).

"To reduce memory consumption, especially for high-resolution features, we apply spatial average
pooling on F to reduce its spatial dimensions before use." The pooled grid is the smallest
uniform reduction that leaves at most ``max_tokens`` tokens, so the head's cost is bounded at
every resolution. A 2D network's (H, W) stages are pooled and encoded the same way (issue 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.layers.position_encoding import sine_position_encoding


def pooled_grid(spatial: tuple[int, ...], max_tokens: int) -> tuple[int, ...]:
    """Grid (D', H', W') obtained by an integer pooling factor k on every axis with D'H'W' <= max_tokens.

    Args:
        spatial: (D, H, W) of the stage, or (H, W) in 2D (the result then is (H', W')).
        max_tokens: upper bound on the product of the grid.
    """
    k = 1
    while True:
        grid = tuple(max(1, math.ceil(s / k)) for s in spatial)
        if math.prod(grid) <= max_tokens:
            return grid
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

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """features: (B, C_s, D, H, W), or (B, C_s, H, W) in 2D.

        Returns:
            memory: (B, N, E) tokens (N = D'H'W' <= max_tokens), level embedding added.
            pos: (1, N, E) sine positional encoding of the pooled grid.
            grid: (D', H', W'), or (H', W').
        """
        spatial = tuple(features.shape[2:])
        grid = pooled_grid(spatial, self.max_tokens)
        pool = F.adaptive_avg_pool3d if len(spatial) == 3 else F.adaptive_avg_pool2d
        pooled = features if grid == spatial else pool(features, grid)
        tokens = pooled.flatten(2).transpose(1, 2)  # (B, C_s, N) -> (B, N, C_s)
        memory = self.proj(tokens) + self.level_embed
        pos = sine_position_encoding(grid, self.dim, device=features.device).to(memory.dtype)[None]
        return memory, pos, grid
