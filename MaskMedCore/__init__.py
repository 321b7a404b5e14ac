"""MaskMedCore: the PyTorch core of MaskMed (decoupled mask and class prediction for 3D medical
image segmentation).

Public API (importing this package does not import torch-heavy modules until used)::

    from MaskMedCore import ModelConfig, build_model, semantic_probs
    cfg = ModelConfig.preset("paper", in_channels=1, num_classes=16)
    model = build_model(cfg)
    out = model(x)                      # x: (B, C, D, H, W)
    probs = semantic_probs(out)         # (B, K, D, H, W)
"""

from MaskMedCore._version import __version__
from MaskMedCore.config import ModelConfig
from MaskMedCore.errors import CheckpointError, ConfigError, DataError, MaskMedError

_LAZY = {
    "build_model": ("MaskMedCore.models.build", "build_model"),
    "MaskMed": ("MaskMedCore.models.maskmed", "MaskMed"),
    "MaskMedOutput": ("MaskMedCore.models.outputs", "MaskMedOutput"),
    "semantic_probs": ("MaskMedCore.models.outputs", "semantic_probs"),
    "LossConfig": ("MaskMedCore.config.loss_config", "LossConfig"),
    "build_criterion": ("MaskMedCore.losses.build", "build_criterion"),
    "HungarianMatcher": ("MaskMedCore.losses.matcher", "HungarianMatcher"),
    "Predictor": ("MaskMedCore.inference.predictor", "Predictor"),
    "Prediction": ("MaskMedCore.inference.predictor", "Prediction"),
    "load_checkpoint": ("MaskMedCore.engine.checkpoint", "load_checkpoint"),
    "train": ("MaskMedCore.engine.trainer", "train"),
    "TrainingConfig": ("MaskMedCore.config.training_config", "TrainingConfig"),
    "PlanConfig": ("MaskMedCore.config.plan_config", "PlanConfig"),
    "generate_phantom": ("MaskMedCore.data.phantom", "generate_phantom"),
}


def __getattr__(name: str):
    # Lazy so `maskmed --help` and `import MaskMedCore` stay fast (torch loads on first use).
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'MaskMedCore' has no attribute {name!r}")


__all__ = [
    "__version__",
    "ModelConfig",
    "MaskMedError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    *_LAZY,
]
