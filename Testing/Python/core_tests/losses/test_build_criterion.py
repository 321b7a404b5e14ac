"""build_criterion: config -> the right criterion, with per-stage matching forced for per-stage queries."""

from __future__ import annotations

import pytest
import torch

from MaskMedCore.config import ModelConfig
from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.losses import CoupledCriterion, SetCriterion, build_criterion


@pytest.mark.parametrize("head", ["pointwise", "mlp_cls", "attn_cls", "attn_cls_mask"])
def test_coupled_heads_get_dc_and_ce(head):
    criterion = build_criterion(
        ModelConfig.preset("tiny", 1, 3, head=head), LossConfig(deep_supervision_decay=0.25, coupled_dice_smooth=1.0)
    )
    assert isinstance(criterion, CoupledCriterion)
    assert criterion.num_classes == 3 and criterion.deep_supervision_decay == 0.25 and criterion.dice_smooth == 1.0


def test_decoupled_head_gets_the_set_criterion_with_config_values():
    loss_cfg = LossConfig(class_weight=4.0, no_object_weight=0.2, matcher_num_points=100, loss_num_points=50)
    criterion = build_criterion(ModelConfig.preset("tiny", 1, 3), loss_cfg)
    assert isinstance(criterion, SetCriterion)
    assert criterion.weights == {"class": 4.0, "bce": 10.0, "dice": 10.0}
    assert criterion.matcher.num_points == 100 and criterion.loss_num_points == 50
    assert criterion.empty_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.2])
    assert criterion.matching == "final"
    assert build_criterion(ModelConfig.preset("tiny", 1, 3)).weights == {"class": 2.0, "bce": 10.0, "dice": 10.0}


def test_per_stage_queries_force_per_stage_matching():
    cfg = ModelConfig.preset("tiny", 1, 3, queries="per_stage")
    assert build_criterion(cfg, LossConfig(matching="final")).matching == "per_stage"


def test_built_criterion_trains_end_to_end(random_output, blob_labels, generator):
    criterion = build_criterion(ModelConfig.preset("tiny", 1, 3), LossConfig(loss_num_points=64))
    out = random_output(2, 3, 3)
    result = criterion(out, blob_labels(2, 3), generator=generator)
    result.total.backward()
    assert all(torch.isfinite(m.grad).all() for m in out.mask_logits)
    assert set(result.terms) >= {"total", "class", "bce", "dice", "stage0/class", "stage2/dice"}
