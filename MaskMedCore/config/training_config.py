"""Training configuration: MaskMed appendix C on nnU-Net's trainer defaults, with a selectable recipe.

The optimiser, its LR and the CNN : Transformer ratio come from ``recipe`` (``config/recipes.py``) unless
given: ``maskmed`` (the default: AdamW 3e-3, ratio 1, chosen from learning curves on real data on a CPU)
or ``paper`` (SGD with Nesterov momentum 0.99, LR 1e-3, ratio 1 : 0.1). Everything else follows the
paper where it speaks (weight decay 3e-5, poly decay 0.9 per parameter group, 1000 epochs x 250
iterations) and nnU-Net v2 elsewhere (gradient clipping at 12, foreground oversampling 0.33, 5 folds,
AMP on CUDA). nnU-Net's own recipe is SGD at LR 1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.config.model_config import PRESETS
from MaskMedCore.config.recipes import DEFAULT_RECIPE, get_recipe
from MaskMedCore.config.validation import check_choice, check_positive_int
from MaskMedCore.errors import ConfigError

DEVICES = ("auto", "cuda", "cpu")
OPTIMIZERS = ("sgd", "adamw")
VALIDATIONS = ("patches", "cases")
CONFIGURATIONS = ("auto", "3d_fullres", "3d_cpu", "2d")
INIT_CHECKPOINTS = ("final", "best")
ALL_FOLDS = "all"


@dataclass(frozen=True)
class TrainingConfig(JsonConfig):
    """Attributes:
    preset: model preset applied to the plan's topology (``paper`` or ``tiny``).
    epochs: number of epochs (MAX_EPOCH of Eq. 7).
    iterations_per_epoch: training iterations per epoch.
    val_iterations: validation patches (batches) per validation round.
    val_every: validate every this many epochs (and after the last).
    recipe: where ``optimizer``, ``initial_lr`` and ``transformer_lr_ratio`` come from when they are not
        given (``maskmed`` or ``paper``, see ``config/recipes.py``; the recipe's loss extra is applied by
        the trainer when it builds the default LossConfig).
    initial_lr: LR of the CNN group; the Transformer group gets ``initial_lr * transformer_lr_ratio``.
    transformer_lr_ratio: the paper's lambda_Trans (Table 5: 0.1).
    momentum: SGD momentum.
    nesterov: Nesterov momentum (nnU-Net).
    weight_decay: SGD weight decay.
    poly_exponent: exponent of the poly LR decay.
    grad_clip: gradient-norm clip (nnU-Net: 12).
    batch_size: patches per iteration per process; ``None`` uses the plan's.
    oversample_foreground: fraction of each batch forced to contain foreground.
    fold: held-out fold (0..num_folds-1), or -1 to train on every case without validation; nnU-Net's
        spelling ``"all"`` is accepted and stored as -1.
    num_folds: folds of the split file (with a user-given split file: its length).
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
    time_budget_minutes: fit the whole schedule into about this wall time: before the first step the
        trainer times a few steps and replaces ``epochs`` by the most epochs of ``iterations_per_epoch``
        whose estimated duration (validation included) fits, at least 1, so the poly schedule still
        runs to its end (``engine/time_estimate.py``). The run's saved config holds the resolved
        ``epochs``; ``None`` keeps ``epochs``.
    validation: ``patches`` (nnU-Net's pseudo-Dice over ``val_iterations`` random validation batches) or
        ``cases`` (every validation case predicted whole by sliding window, mean per-case Dice;
        ``engine/case_validation.py``).
    warmup_iterations: linear LR warm-up from ~0 over this many iterations, then the poly schedule
        (0 = none, as nnU-Net and the paper).
    channels_last: run the network in ``channels_last_3d`` memory format (same results up to float
        rounding; on 2 CPU cores 1.4x faster training steps for the tiny preset, BENCHMARKS.md).
    configuration: the plan to train with: ``3d_fullres`` (``plan.json``), ``3d_cpu`` (``plan_cpu.json``,
        a smaller patch, ``data/planner.py``), ``2d`` (``plan_2d.json``: nnU-Net's 2d configuration, a 2D
        network on single slices, ``data/planner_2d.py``) or ``auto`` (``2d`` for a dataset of single-slice
        images, else ``3d_cpu`` when the device is the CPU and ``3d_fullres`` otherwise). The run's saved
        config holds the resolved name.
    init_from: start the encoder and decoder (and whatever else fits) from a trained model instead of
        random weights: an nnU-Net v2 result folder (``Trainer__Plans__configuration``) or a MaskMed run
        folder / checkpoint (``engine/init_from.py``). Its plan's spacing, patch, batch and UNet topology
        replace the dataset's; its labels must be the dataset's. Used only when a run starts: the field
        stays in the run's config as the record of where it started, and ``resume`` never re-initialises.
    init_fold: the nnU-Net fold whose checkpoint ``init_from`` loads (``None``: the folder's first fold).
    init_checkpoint: ``final`` (nnU-Net's ``checkpoint_final.pth``, a MaskMed run's latest checkpoint) or
        ``best``.
    freeze_backbone_iterations: keep the encoder and decoder fixed (no gradients, not stepped) for this
        many iterations from the run's start, so the new head (and bridge) first learn on the pretrained
        features; they train with everything else from then on (``engine/backbone_freeze.py``). Needs
        ``init_from``.
    """

    config_name: ClassVar[str] = "training config"

    preset: str = "paper"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    val_every: int = 5
    recipe: str = DEFAULT_RECIPE
    initial_lr: float | None = None
    transformer_lr_ratio: float | None = None
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
    optimizer: str | None = None
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    validation: str = "patches"
    warmup_iterations: int = 0
    channels_last: bool = True
    time_budget_minutes: float | None = None
    configuration: str = "auto"
    init_from: str | None = None
    init_fold: str | None = None
    init_checkpoint: str = "final"
    freeze_backbone_iterations: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fold, str) and self.fold.strip().lower() == ALL_FOLDS:
            object.__setattr__(self, "fold", -1)
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        if any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise ConfigError(f"mirror_axes must be a subset of (0, 1, 2), got {self.mirror_axes}")
        recipe = get_recipe(self.recipe)
        for name, value in recipe.training_fields().items():  # the recipe fills what was not given
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("preset", self.preset, PRESETS)
        check_choice("device", self.device, DEVICES)
        check_choice("validation", self.validation, VALIDATIONS)
        check_choice("configuration", self.configuration, CONFIGURATIONS)
        check_choice("init_checkpoint", self.init_checkpoint, INIT_CHECKPOINTS)
        if self.init_fold is not None:
            object.__setattr__(self, "init_fold", str(self.init_fold))
        if isinstance(self.freeze_backbone_iterations, bool) or not isinstance(self.freeze_backbone_iterations, int):
            raise ConfigError(f"freeze_backbone_iterations must be an integer, got {self.freeze_backbone_iterations!r}")
        if self.freeze_backbone_iterations < 0:
            raise ConfigError(f"freeze_backbone_iterations must be >= 0, got {self.freeze_backbone_iterations}")
        if self.freeze_backbone_iterations and not self.init_from:
            raise ConfigError(
                f"freeze_backbone_iterations is {self.freeze_backbone_iterations} but init_from is not set: freezing "
                "a randomly initialised encoder/decoder would train the head on random features; give init_from "
                "(--init-from) or set it to 0"
            )
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
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not -1 <= self.fold < self.num_folds:
            raise ConfigError(
                f"fold is {self.fold!r}; expected 'all' or -1 (train on every case, no validation) "
                f"or a held-out fold 0..{self.num_folds - 1}"
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        for name in ("max_minutes", "time_budget_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 (minutes), got {value}")

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch
