"""ModelConfig: validation names the field, JSON round trip, presets and ablation overrides."""

import json

import pytest

from MaskMedCore.config import HEADS, ModelConfig
from MaskMedCore.errors import ConfigError


@pytest.mark.parametrize("preset", ["paper", "tiny"])
def test_json_round_trip(preset):
    cfg = ModelConfig.preset(preset, in_channels=2, num_classes=5)
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["strides"][0] == [1, 1, 1]


def test_paper_preset_is_full_maskmed():
    cfg = ModelConfig.preset("paper", 1, 16)
    assert (cfg.head, cfg.queries, cfg.masked_attention, cfg.bridge) == ("decoupled", "shared", True, "fsad")
    assert cfg.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert cfg.queries_count == 16  # Q = K, Table 6


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"head": "conv"}, "head"),
        ({"bridge": "swin"}, "bridge"),
        ({"queries": "many"}, "queries"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"strides": [[2, 2, 2]] * 4}, "strides[0]"),
        ({"kernel_sizes": [[3, 3, 3]] * 3}, "kernel_sizes"),
        ({"kernel_sizes": [[3, 2, 3]] * 4}, "kernel_sizes"),
        ({"head_dim": 30, "head_heads": 4}, "head_dim"),
        ({"bridge_query_stages": 9}, "bridge_query_stages"),
        ({"head": "attn_cls", "masked_attention": True}, "masked_attention"),
        ({"queries": "per_stage", "masked_attention": True}, "masked_attention"),
        ({"head": "pointwise", "num_queries": 7}, "num_queries"),
        ({"dropout": 1.5}, "dropout"),
        ({"encoder": "resnet"}, "encoder"),
        ({"encoder": "residual"}, "n_blocks_per_stage"),
        ({"encoder": "residual", "n_blocks_per_stage": [1, 2, 2]}, "n_blocks_per_stage"),
        ({"encoder": "residual", "n_blocks_per_stage": [1, 2, 0, 2]}, "n_blocks_per_stage[2]"),
        ({"n_blocks_per_stage": [1, 2, 2, 2]}, "n_blocks_per_stage"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    data = {**ModelConfig.preset("tiny", 1, 3).to_dict(), **overrides}
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ModelConfig.from_dict(data)


def test_config_without_the_encoder_fields_loads_as_the_plain_encoder():
    """Configs and checkpoints written before ``encoder``/``n_blocks_per_stage`` existed load unchanged."""
    data = ModelConfig.preset("tiny", 1, 3).to_dict()
    old = {k: v for k, v in data.items() if k not in ("encoder", "n_blocks_per_stage")}
    cfg = ModelConfig.from_dict(old)
    assert (cfg.encoder, cfg.n_blocks_per_stage) == ("plain", None) and cfg == ModelConfig.from_dict(data)
    residual = cfg.replace(encoder="residual", n_blocks_per_stage=[1, 2, 2, 2])
    assert residual.n_blocks_per_stage == (1, 2, 2, 2) and ModelConfig.from_json(residual.to_json()) == residual


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="bridge_layerz"):
        ModelConfig.from_dict({"in_channels": 1, "num_classes": 3, "bridge_layerz": 2})
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json("{", source="x.json")


@pytest.mark.parametrize("head", HEADS)
def test_ablation_overrides_switch_masked_attention_off(head):
    cfg = ModelConfig.preset("paper", 1, 4, head=head)
    assert cfg.masked_attention == (head == "decoupled")


def test_input_shape_check():
    cfg = ModelConfig.preset("tiny", 1, 3)
    cfg.check_input_shape((16, 32, 8))
    with pytest.raises(ConfigError, match="H=12"):
        cfg.check_input_shape((16, 12, 8))


@pytest.mark.parametrize(
    "strides, expected",
    [
        # nnU-Net's 6-stage isotropic AMOS topology: the 8x, 16x and 32x stages, the paper's "smallest three"
        (((1, 1, 1),) + ((2, 2, 2),) * 5, 3),
        # MSD hippocampus (4 stages, 40x56x40): only the 8x stage; the stride-2 stage would be 78k tokens
        (((1, 1, 1),) + ((2, 2, 2),) * 3, 1),
        # 5 stages: the 8x and 16x stages
        (((1, 1, 1),) + ((2, 2, 2),) * 4, 2),
        # anisotropic (in-plane pooling first): products 1, 4, 16, 128, 1024 -> only the last
        (((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)), 1),
        # a shallow 3-stage network: at least the coarsest stage
        (((1, 1, 1), (2, 2, 2), (2, 2, 2)), 1),
    ],
)
def test_bridge_query_stages_follow_the_resolution(strides, expected):
    from MaskMedCore.config.model_config import default_bridge_query_stages

    assert default_bridge_query_stages(strides) == expected
    n = len(strides)
    cfg = ModelConfig.preset(
        "paper",
        1,
        3,
        strides=strides,
        kernel_sizes=((3, 3, 3),) * n,
        features_per_stage=tuple(min(32 * 2**i, 320) for i in range(n)),
    )
    assert cfg.bridge_query_stages == expected


def test_explicit_bridge_query_stages_is_kept():
    assert ModelConfig.preset("tiny", 1, 3, bridge_query_stages=2).bridge_query_stages == 2
    assert ModelConfig.preset("tiny", 1, 3).bridge_query_stages == 1
