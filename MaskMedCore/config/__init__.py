"""Frozen, JSON round-trippable configuration dataclasses (one per concern)."""

from MaskMedCore.config.model_config import BRIDGES, HEADS, PRESETS, QUERY_MODES, ModelConfig

__all__ = ["ModelConfig", "HEADS", "BRIDGES", "QUERY_MODES", "PRESETS"]
