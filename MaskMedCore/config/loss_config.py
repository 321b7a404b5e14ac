"""Loss configuration: a frozen, JSON round-trippable description of MaskMed's training loss.

MaskMed §3.5 (Eq. 6): Hungarian matching on the final stage, then per stage a weighted sum of a
K+1-way cross-entropy and sigmoid BCE + Dice on the matched masks, with deep-supervision weights
that halve per coarser stage and are normalised to sum 1. The default ratio class:BCE:Dice =
2:10:10 is the paper's best (Table 7). The point-sampling options follow Mask2Former (PointRend
importance sampling, oversample 3.0, importance 0.75).

The coupled heads (Fig. 1b-e) use nnU-Net's CE + soft Dice instead; only ``deep_supervision_decay``
and ``coupled_dice_smooth`` apply to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.config.validation import check_choice, check_positive_int
from MaskMedCore.errors import ConfigError

MATCHING_MODES = ("final", "per_stage")
"""``final``: match once on the finest stage and reuse the indices at every stage (paper §3.5);
``per_stage``: match every stage on its own (needed when stages do not share queries)."""


def _check_float(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """Return ``value`` as float if it is a finite number in [low, high] (or (low, high])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}], got {value}")
    return value


@dataclass(frozen=True)
class LossConfig(JsonConfig):
    """Weights and options of the MaskMed criterion (``MaskMedCore.build_criterion``).

    Attributes:
        class_weight: weight of the K+1-way classification cross-entropy (decoupled head).
        bce_weight: weight of the sigmoid BCE of matched masks (decoupled head).
        dice_weight: weight of the Dice loss of matched masks (decoupled head).
        no_object_weight: CE weight of the "no object" class (Mask2Former's ``eos_coef``).
        matcher_num_points: ``None`` matches on every voxel of the matched stage; an int draws
            that many uniform random points per image, shared by predictions and targets, to
            bound the matcher's memory.
        loss_num_points: ``None`` computes the mask loss densely at each stage's resolution; an
            int uses that many PointRend importance-sampled points per matched mask.
        oversample_ratio: candidates drawn per kept point in importance sampling (k >= 1).
        importance_sample_ratio: fraction of points taken from the most uncertain candidates;
            the rest are uniform random (beta in [0, 1]).
        matching: one of ``MATCHING_MODES``.
        deep_supervision_decay: weight ratio between a stage and the next finer one (paper: 0.5);
            the weights are normalised to sum 1. Unlike nnU-Net, the coarsest stage keeps its
            weight.
        coupled_dice_smooth: smoothing term of the coupled heads' soft Dice (nnU-Net: 1e-5).
        semantic_weight: decoupled head only: weight of an extra CE + soft Dice on the composed per-voxel
            class probabilities (``losses/criterion.py``); 0 (the paper) leaves it out.
        box_l1_weight: models with a box head (``ModelConfig.box_head``): weight of the L1 box loss and
            matching cost (DETR: 5).
        box_giou_weight: models with a box head: weight of the 1 - GIoU box loss and -GIoU matching cost
            (DETR: 2).
        case_weight: models with case-level tasks (``ModelConfig.case_tasks``): weight of their
            cross-entropy. With class, BCE and Dice weights all 0 it is the only loss (a
            classification-only baseline) and must be > 0.
    """

    config_name: ClassVar[str] = "loss config"

    class_weight: float = 2.0
    bce_weight: float = 10.0
    dice_weight: float = 10.0
    no_object_weight: float = 0.1
    matcher_num_points: int | None = None
    loss_num_points: int | None = None
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    matching: str = "final"
    deep_supervision_decay: float = 0.5
    coupled_dice_smooth: float = 1e-5
    semantic_weight: float = 0.0
    # Multi-task weights (issue 12), last and defaulted so loss_config.json files written before them load.
    box_l1_weight: float = 5.0
    box_giou_weight: float = 2.0
    case_weight: float = 1.0

    def __post_init__(self) -> None:
        inf = math.inf
        for name in ("class_weight", "bce_weight", "dice_weight", "box_l1_weight", "box_giou_weight", "case_weight"):
            object.__setattr__(self, name, _check_float(name, getattr(self, name), 0.0, inf))
        if self.class_weight + self.bce_weight + self.dice_weight == 0.0 and self.case_weight == 0.0:
            raise ConfigError(
                "class_weight, bce_weight and dice_weight are all 0 and so is case_weight; the loss would be "
                "constant. Set a segmentation weight, or case_weight > 0 for a classification-only model"
            )
        # 0 would make the weighted CE 0/0 for a batch with no matched query.
        object.__setattr__(
            self, "no_object_weight", _check_float("no_object_weight", self.no_object_weight, 0.0, inf, True)
        )
        for name in ("matcher_num_points", "loss_num_points"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        object.__setattr__(self, "oversample_ratio", _check_float("oversample_ratio", self.oversample_ratio, 1.0, inf))
        object.__setattr__(
            self,
            "importance_sample_ratio",
            _check_float("importance_sample_ratio", self.importance_sample_ratio, 0.0, 1.0),
        )
        check_choice("matching", self.matching, MATCHING_MODES)
        object.__setattr__(
            self,
            "deep_supervision_decay",
            _check_float("deep_supervision_decay", self.deep_supervision_decay, 0.0, 1.0, True),
        )
        object.__setattr__(
            self, "coupled_dice_smooth", _check_float("coupled_dice_smooth", self.coupled_dice_smooth, 0.0, inf)
        )
        object.__setattr__(self, "semantic_weight", _check_float("semantic_weight", self.semantic_weight, 0.0, inf))

    # ------------------------------------------------------------------ JSON
