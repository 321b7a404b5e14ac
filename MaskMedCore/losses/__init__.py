"""Matching and losses (MaskMed §3.5, Eq. 5-6): Hungarian matcher, set criterion of the decoupled
head, nnU-Net-style DC+CE of the coupled heads, point sampling and segment targets; for 3D volumes and
2D images alike (the number of spatial axes is read from the labels and mask logits)."""

from MaskMedCore.config.loss_config import MATCHING_MODES, LossConfig
from MaskMedCore.losses.build import build_criterion
from MaskMedCore.losses.common import LossResult, deep_supervision_weights
from MaskMedCore.losses.coupled_loss import CoupledCriterion, soft_dice_loss
from MaskMedCore.losses.criterion import SetCriterion
from MaskMedCore.losses.mask_losses import (
    binary_dice_loss,
    pairwise_bce_cost,
    pairwise_dice_cost,
    sigmoid_bce_loss,
)
from MaskMedCore.losses.matcher import HungarianMatcher, MatchIndices, solve_assignment
from MaskMedCore.losses.point_sampling import (
    importance_points,
    point_sample,
    point_sample_3d,
    point_uncertainty,
    uniform_points,
)
from MaskMedCore.losses.targets import (
    SegmentTargets,
    build_targets,
    check_label_map,
    downsample_labels,
    resize_masks,
    segment_targets,
    stage_targets,
)

__all__ = [
    "LossConfig",
    "MATCHING_MODES",
    "build_criterion",
    "LossResult",
    "deep_supervision_weights",
    "SetCriterion",
    "CoupledCriterion",
    "soft_dice_loss",
    "HungarianMatcher",
    "MatchIndices",
    "solve_assignment",
    "sigmoid_bce_loss",
    "binary_dice_loss",
    "pairwise_bce_cost",
    "pairwise_dice_cost",
    "point_sample",
    "point_sample_3d",
    "uniform_points",
    "importance_points",
    "point_uncertainty",
    "SegmentTargets",
    "build_targets",
    "segment_targets",
    "stage_targets",
    "downsample_labels",
    "resize_masks",
    "check_label_map",
]
