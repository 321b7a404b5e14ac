"""LossConfig: defaults from the paper, validation naming the field, JSON round trip."""

from __future__ import annotations

import pytest

from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.errors import ConfigError


def test_defaults_are_the_papers_ratio():
    cfg = LossConfig()
    assert (cfg.class_weight, cfg.bce_weight, cfg.dice_weight) == (2.0, 10.0, 10.0)
    assert cfg.no_object_weight == 0.1
    assert cfg.matching == "final"
    assert cfg.deep_supervision_decay == 0.5
    assert cfg.matcher_num_points is None and cfg.loss_num_points is None


def test_json_round_trip():
    cfg = LossConfig(class_weight=4, matcher_num_points=1000, loss_num_points=500, matching="per_stage")
    again = LossConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.class_weight, float)  # ints from JSON are normalised


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("class_weight", -1.0, "class_weight"),
        ("bce_weight", float("nan"), "bce_weight"),
        ("dice_weight", "10", "dice_weight"),
        ("no_object_weight", 0.0, "no_object_weight"),
        ("matcher_num_points", 0, "matcher_num_points"),
        ("loss_num_points", 12.5, "loss_num_points"),
        ("oversample_ratio", 0.5, "oversample_ratio"),
        ("importance_sample_ratio", 1.5, "importance_sample_ratio"),
        ("matching", "every", "'final', 'per_stage'"),
        ("deep_supervision_decay", 0.0, "deep_supervision_decay"),
        ("deep_supervision_decay", True, "deep_supervision_decay"),
        ("coupled_dice_smooth", -1e-5, "coupled_dice_smooth"),
    ],
)
def test_bad_values_name_the_field(field, value, words):
    with pytest.raises(ConfigError, match=field) as info:
        LossConfig(**{field: value})
    assert words in str(info.value)


def test_all_zero_weights_rejected():
    with pytest.raises(ConfigError, match="all 0"):
        LossConfig(class_weight=0, bce_weight=0, dice_weight=0, case_weight=0)
    # A classification-only baseline: no set terms, the case term is the loss.
    assert LossConfig(class_weight=0, bce_weight=0, dice_weight=0).case_weight == 1.0


def test_unknown_keys_rejected_by_name():
    with pytest.raises(ConfigError, match="class_wieght"):
        LossConfig.from_dict({"class_wieght": 2.0})
    with pytest.raises(ConfigError, match="not valid JSON"):
        LossConfig.from_json("{")
    with pytest.raises(ConfigError, match="unknown"):
        LossConfig().replace(points=3)
