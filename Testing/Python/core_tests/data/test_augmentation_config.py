"""AugmentationConfig: nnU-Net defaults, JSON round trip, unknown keys and bad values named."""

import json

import pytest

from MaskMedCore.config.augmentation_config import AugmentationConfig, needs_dummy_2d
from MaskMedCore.errors import ConfigError


def test_defaults_are_nnunet():
    cfg = AugmentationConfig()
    assert (cfg.rotation_p, cfg.rotation_degrees, cfg.rotation_degrees_dummy_2d) == (
        0.2,
        (-30.0, 30.0),
        (-180.0, 180.0),
    )
    assert (cfg.scaling_p, cfg.scaling_range, cfg.scaling_synchronized) == (0.2, (0.7, 1.4), True)
    assert cfg.elastic_p == 0.0
    assert (cfg.noise_p, cfg.noise_variance) == (0.1, (0.0, 0.1))
    assert (cfg.blur_p, cfg.blur_sigma, cfg.blur_p_per_channel) == (0.2, (0.5, 1.0), 0.5)
    assert (cfg.brightness_p, cfg.brightness_range) == (0.15, (0.75, 1.25))
    assert (cfg.contrast_p, cfg.contrast_range, cfg.contrast_preserve_range) == (0.15, (0.75, 1.25), True)
    assert (cfg.lowres_p, cfg.lowres_scale, cfg.lowres_p_per_channel) == (0.25, (0.5, 1.0), 0.5)
    assert (cfg.inverted_gamma_p, cfg.gamma_p, cfg.gamma_range, cfg.gamma_retain_stats) == (0.1, 0.3, (0.7, 1.5), True)
    assert (cfg.mirror_axes, cfg.mirror_p) == ((0, 1, 2), 0.5)
    assert cfg.enabled and not cfg.dummy_2d
    assert cfg.rotation_range == (-30.0, 30.0)
    assert AugmentationConfig(dummy_2d=True).rotation_range == (-180.0, 180.0)


def test_json_round_trip():
    cfg = AugmentationConfig(dummy_2d=True, elastic_p=0.3, mirror_axes=(1, 2), gamma_range=(0.5, 2.0))
    again = AugmentationConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["mirror_axes"] == [1, 2]
    assert hash(again) == hash(cfg)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="rotaton_p"):
        AugmentationConfig.from_dict({"rotaton_p": 0.1})
    with pytest.raises(ConfigError, match="not valid JSON"):
        AugmentationConfig.from_json("{")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rotation_p": 1.5}, "rotation_p"),
        ({"blur_p_per_channel": -0.1}, "blur_p_per_channel"),
        ({"enabled": 1}, "enabled"),
        ({"scaling_range": [1.4, 0.7]}, "scaling_range"),
        ({"scaling_range": [0.0, 1.4]}, "scaling_range"),
        ({"rotation_degrees": [-200, 30]}, "rotation_degrees"),
        ({"noise_variance": [0.1]}, "noise_variance"),
        ({"lowres_scale": [0.5, 2.0]}, "lowres_scale"),
        ({"gamma_range": ["a", 1.0]}, "gamma_range"),
        ({"elastic_sigma": [0.0, 1.0]}, "elastic_sigma"),
        ({"mirror_axes": [0, 3]}, "mirror_axes"),
        ({"mirror_axes": [1, 1]}, "mirror_axes"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        AugmentationConfig.from_dict(overrides)


def test_without_randomness_zeroes_every_probability():
    cfg = AugmentationConfig(elastic_p=0.5).without_randomness()
    assert all(getattr(cfg, name) == 0.0 for name in cfg.to_dict() if name.endswith("_p"))
    with pytest.raises(ConfigError, match="colour_p"):
        cfg.replace(colour_p=0.1)


@pytest.mark.parametrize(
    ("patch", "expected"), [((128, 128, 128), False), ((20, 160, 160), True), ((40, 120, 120), False)]
)
def test_dummy_2d_rule(patch, expected):
    assert needs_dummy_2d(patch) is expected
