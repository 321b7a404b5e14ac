"""Training configuration: the paper's recipe (MaskMed appendix C) on nnU-Net's trainer defaults.

Defaults follow the paper where it speaks (SGD, momentum 0.99, weight decay 3e-5, initial LR
1e-3, poly decay 0.9 per parameter group with CNN : Transformer = 1 : 0.1, batch size 2,
1000 epochs x 250 iterations) and nnU-Net v2 elsewhere (Nesterov momentum, gradient clipping at
12, foreground oversampling 0.33, 5 folds, AMP on CUDA). Note that nnU-Net's own initial LR is
1e-2; the paper's 1e-3 is the default here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.config.model_config import PRESETS
from MaskMedCore.config.validation import check_choice, check_positive_int
from MaskMedCore.errors import ConfigError

DEVICES = ("auto", "cuda", "cpu")
OPTIMIZERS = ("sgd", "adamw")
VALIDATIONS = ("patches", "cases")


@dataclass(frozen=True)
class TrainingConfig(JsonConfig):
    """Attributes:
    preset: model preset applied to the plan's topology (``paper`` or ``tiny``).
    epochs: number of epochs (MAX_EPOCH of Eq. 7).
    iterations_per_epoch: training iterations per epoch.
    val_iterations: validation patches (batches) per validation round.
    val_every: validate every this many epochs (and after the last).
    initial_lr: LR of the CNN group; the Transformer group gets ``initial_lr * transformer_lr_ratio``.
    transformer_lr_ratio: the paper's lambda_Trans (Table 5: 0.1).
    momentum: SGD momentum.
    nesterov: Nesterov momentum (nnU-Net).
    weight_decay: SGD weight decay.
    poly_exponent: exponent of the poly LR decay.
    grad_clip: gradient-norm clip (nnU-Net: 12).
    batch_size: patches per iteration per process; ``None`` uses the plan's.
    oversample_foreground: fraction of each batch forced to contain foreground.
    fold: held-out fold (0..num_folds-1), or -1 to train on every case without validation.
    num_folds: folds of the split file.
    split_seed: seed of the split file (nnU-Net: 12345).
    seed: seed of sampling, augmentation and initialisation.
    num_workers: background data-loading processes.
    amp: mixed precision on CUDA (ignored on CPU).
    augment: run the nnU-Net augmentation pipeline.
    device: ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
    optimizer: ``sgd`` (the paper) or ``adamw`` (converges faster on short CPU schedules, e.g. the demo).
    mirror_axes: axes (0=D, 1=H, 2=W) mirrored by augmentation; ``()`` for datasets with left/right
        labels (e.g. kidney_left/kidney_right), as TotalSegmentator trains.
    max_minutes: stop (with a resumable checkpoint) after this wall time; ``None`` = no limit.
    validation: ``patches`` (nnU-Net's pseudo-Dice over ``val_iterations`` random validation batches) or
        ``cases`` (every validation case predicted whole by sliding window, mean per-case Dice;
        ``engine/case_validation.py``).
    warmup_iterations: linear LR warm-up from ~0 over this many iterations, then the poly schedule
        (0 = none, as nnU-Net and the paper).
    channels_last: run the network in ``channels_last_3d`` memory format (same results up to float
        rounding; on 2 CPU cores 1.4x faster training steps for the tiny preset, BENCHMARKS.md).
    """

    config_name: ClassVar[str] = "training config"

    preset: str = "paper"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    val_every: int = 5
    initial_lr: float = 1e-3
    transformer_lr_ratio: float = 0.1
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    batch_size: int | None = None
    oversample_foreground: float = 0.33
    fold: int = 0
    num_folds: int = 5
    split_seed: int = 12345
    seed: int = 0
    num_workers: int = 2
    amp: bool = True
    augment: bool = True
    device: str = "auto"
    max_minutes: float | None = None
    optimizer: str = "sgd"
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    validation: str = "patches"
    warmup_iterations: int = 0
    channels_last: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        if any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise ConfigError(f"mirror_axes must be a subset of (0, 1, 2), got {self.mirror_axes}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("preset", self.preset, PRESETS)
        check_choice("device", self.device, DEVICES)
        check_choice("validation", self.validation, VALIDATIONS)
        if self.warmup_iterations < 0:
            raise ConfigError(f"warmup_iterations must be >= 0, got {self.warmup_iterations}")
        for name in ("epochs", "iterations_per_epoch", "val_iterations", "val_every", "num_folds"):
            check_positive_int(name, getattr(self, name))
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        for name in ("initial_lr", "transformer_lr_ratio", "grad_clip", "poly_exponent"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.oversample_foreground <= 1:
            raise ConfigError(f"oversample_foreground must be in [0, 1], got {self.oversample_foreground}")
        if not (self.fold == -1 or 0 <= self.fold < self.num_folds):
            raise ConfigError(f"fold is {self.fold}; expected -1 (all cases) or 0..{self.num_folds - 1}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch
