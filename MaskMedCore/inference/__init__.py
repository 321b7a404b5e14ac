"""Inference: network-agnostic sliding-window prediction (nnU-Net-style tiling, Gaussian blending, mirroring TTA)."""

from MaskMedCore.inference.sliding_window import (
    InferenceCancelled,
    InferenceOutOfMemory,
    TilePass,
    gaussian_importance_map,
    sliding_window_predict,
    tile_positions,
)

__all__ = [
    "InferenceCancelled",
    "InferenceOutOfMemory",
    "TilePass",
    "gaussian_importance_map",
    "sliding_window_predict",
    "tile_positions",
]
