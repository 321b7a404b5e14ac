"""Frozen, JSON round-trippable configuration dataclasses (one per concern)."""

from MaskMedCore.config.augmentation_config import AugmentationConfig, needs_dummy_2d
from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.config.model_config import BRIDGES, HEADS, PRESETS, QUERY_MODES, ModelConfig
from MaskMedCore.config.plan_config import NORMALIZATION_SCHEMES, ChannelNormalization, PlanConfig
from MaskMedCore.config.training_config import TrainingConfig

__all__ = [
    "ModelConfig",
    "LossConfig",
    "PlanConfig",
    "TrainingConfig",
    "AugmentationConfig",
    "needs_dummy_2d",
    "ChannelNormalization",
    "HEADS",
    "BRIDGES",
    "QUERY_MODES",
    "PRESETS",
    "NORMALIZATION_SCHEMES",
]
