"""Build the encoder-decoder skip bridge named by the model config (MaskMed §3.3, appendix B).

Kinds: ``"none"`` (plain U-Net skips), ``"standard"`` (dense Transformer over the coarsest
stages), ``"deformable"`` (Deformable-DETR encoder over the coarsest stages, Zhu et al. 2021) and
``"fsad"`` (the paper's FSAD-Transformer: queries from the coarsest stages, values from all).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from MaskMedCore.errors import ConfigError
from MaskMedCore.models.bridges.deformable_bridge import DeformableBridge
from MaskMedCore.models.bridges.dense_bridge import DenseBridge

BRIDGE_KINDS = ("none", "standard", "deformable", "fsad")


def build_bridge(
    kind: str,
    stage_channels: Sequence[int],
    query_stages: int,
    dim: int,
    heads: int,
    points: int,
    layers: int,
    ffn_dim: int,
    dropout: float = 0.0,
    spatial_dims: int = 3,
) -> nn.Module | None:
    """Make the bridge applied to the encoder skips before the decoder.

    Args:
        kind: one of ``"none"``, ``"standard"``, ``"deformable"``, ``"fsad"``.
        stage_channels: channels C_s of every encoder stage, finest first.
        query_stages: how many of the coarsest stages provide queries (and are replaced).
        dim: token width C.
        heads: attention heads M.
        points: sampling points P per head and value level (deformable kinds only).
        layers: number of transformer layers.
        ffn_dim: FFN hidden width.
        dropout: dropout rate.
        spatial_dims: 3 for a 3D network's (D, H, W) stages, 2 for a 2D network's (H, W) stages.

    Returns:
        ``None`` for ``"none"``, else a module mapping ``skips: list[Tensor] -> list[Tensor]``
        (same shapes, the last ``query_stages`` entries refined).

    Raises:
        ConfigError: on an unknown ``kind`` or an out-of-range ``query_stages``.
    """
    if kind not in BRIDGE_KINDS:
        raise ConfigError(f"bridge kind {kind!r} is not one of {', '.join(map(repr, BRIDGE_KINDS))}")
    if kind == "none":
        return None
    if not 1 <= query_stages <= len(stage_channels):
        raise ConfigError(
            f"bridge query_stages={query_stages} must be between 1 and the number of encoder stages "
            f"({len(stage_channels)})"
        )
    if kind == "standard":
        return DenseBridge(stage_channels, query_stages, dim, heads, layers, ffn_dim, dropout, spatial_dims)
    return DeformableBridge(
        stage_channels,
        query_stages,
        dim,
        heads,
        points,
        layers,
        ffn_dim,
        dropout,
        full_scale=kind == "fsad",
        spatial_dims=spatial_dims,
    )


__all__ = ["BRIDGE_KINDS", "build_bridge"]
