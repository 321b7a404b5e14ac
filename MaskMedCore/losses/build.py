"""Config -> criterion (MaskMed §3.5, Eq. 6 for the decoupled head; nnU-Net's DC+CE for the coupled heads).

The one place that maps a ``ModelConfig`` + ``LossConfig`` to a loss module. The decoupled head
gets the Hungarian-matched ``SetCriterion``; the coupled heads (Fig. 1b-e) get ``CoupledCriterion``.
Models whose stages have independent query sets (``queries="per_stage"``) cannot reuse the finest
stage's matching, so their matching is forced to ``"per_stage"``. The box and case weights apply only
to a model with a box head / case tasks (issue 12); for other models they are passed as 0, so their
criterion is the one they had before those options existed.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.errors import ConfigError
from MaskMedCore.losses.coupled_loss import CoupledCriterion
from MaskMedCore.losses.criterion import SetCriterion


def build_criterion(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig | None = None,
    *,
    reduce_num_masks: Callable[[Tensor], Tensor] | None = None,
) -> SetCriterion | CoupledCriterion:
    """The criterion for a model, called as ``criterion(out, labels, generator=None) -> LossResult``
    (``SetCriterion`` also takes ``case_targets=``).

    Args:
        model_cfg: the model's configuration (head, queries, num_classes).
        loss_cfg: loss weights and options; ``None`` uses ``LossConfig()`` (the paper's 2:10:10).
        reduce_num_masks: decoupled head only: hook applied to the batch's segment count before it
            is clamped to >= 1 (e.g. all-reduce / world size under DDP).

    Returns:
        ``SetCriterion`` for head ``"decoupled"``, ``CoupledCriterion`` otherwise.

    Raises:
        ConfigError: class, BCE and Dice weights are all 0 (classification only) but the model has no
            case tasks, or it has a box head (boxes are matched, which needs the set terms).
    """
    loss_cfg = LossConfig() if loss_cfg is None else loss_cfg
    set_weights = loss_cfg.class_weight + loss_cfg.bce_weight + loss_cfg.dice_weight
    if model_cfg.decoupled and set_weights == 0.0 and (not model_cfg.case_tasks or model_cfg.box_head):
        raise ConfigError(
            "loss config: class_weight, bce_weight and dice_weight are all 0, which only a classification-only "
            f"model allows (case_tasks set, box_head off); this model has case_tasks {list(model_cfg.case_tasks)} "
            f"and box_head {model_cfg.box_head}"
        )
    if not model_cfg.decoupled:
        return CoupledCriterion(
            model_cfg.num_classes,
            deep_supervision_decay=loss_cfg.deep_supervision_decay,
            dice_smooth=loss_cfg.coupled_dice_smooth,
        )
    matching = "per_stage" if model_cfg.queries == "per_stage" else loss_cfg.matching
    return SetCriterion(
        model_cfg.num_classes,
        class_weight=loss_cfg.class_weight,
        bce_weight=loss_cfg.bce_weight,
        dice_weight=loss_cfg.dice_weight,
        no_object_weight=loss_cfg.no_object_weight,
        matcher_num_points=loss_cfg.matcher_num_points,
        loss_num_points=loss_cfg.loss_num_points,
        oversample_ratio=loss_cfg.oversample_ratio,
        importance_sample_ratio=loss_cfg.importance_sample_ratio,
        matching=matching,
        deep_supervision_decay=loss_cfg.deep_supervision_decay,
        semantic_weight=loss_cfg.semantic_weight,
        instance_classes=model_cfg.instance_classes,
        box_l1_weight=loss_cfg.box_l1_weight if model_cfg.box_head else 0.0,
        box_giou_weight=loss_cfg.box_giou_weight if model_cfg.box_head else 0.0,
        case_weight=loss_cfg.case_weight if model_cfg.case_tasks else 0.0,
        reduce_num_masks=reduce_num_masks,
    )
