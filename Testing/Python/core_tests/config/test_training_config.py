"""TrainingConfig: paper defaults, validation naming the field, optimiser groups keep the LR ratio."""

import pytest

from MaskMedCore.config import ModelConfig, TrainingConfig
from MaskMedCore.engine.trainer import build_optimizer
from MaskMedCore.errors import ConfigError
from MaskMedCore.models.build import build_model


def test_the_paper_recipe_is_selectable_and_the_default_is_maskmeds():
    cfg = TrainingConfig(recipe="paper")
    assert (cfg.optimizer, cfg.initial_lr, cfg.momentum, cfg.weight_decay) == ("sgd", 1e-3, 0.99, 3e-5)
    assert (cfg.transformer_lr_ratio, cfg.epochs, cfg.iterations_per_epoch, cfg.poly_exponent) == (0.1, 1000, 250, 0.9)
    assert cfg.nesterov and cfg.mirror_axes == (0, 1, 2)
    assert TrainingConfig.from_json(cfg.to_json()) == cfg
    default = TrainingConfig()
    assert (default.recipe, default.optimizer, default.initial_lr, default.transformer_lr_ratio) == (
        "maskmed",
        "adamw",
        3e-3,
        1.0,
    )
    # explicit values win over the recipe's
    assert TrainingConfig(recipe="paper", optimizer="adamw", initial_lr=5e-4).optimizer == "adamw"
    with pytest.raises(ConfigError, match="recipe"):
        TrainingConfig(recipe="fast")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"mirror_axes": (0, 3)}, "mirror_axes"),
        ({"fold": 7}, "fold"),
        ({"device": "tpu"}, "device"),
        ({"initial_lr": 0}, "initial_lr"),
        ({"max_minutes": -1}, "max_minutes"),
    ],
)
def test_bad_values_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        TrainingConfig(**change)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_groups_keep_the_transformer_ratio(optimizer):
    model = build_model(ModelConfig.preset("tiny", 1, 3))
    opt = build_optimizer(model, TrainingConfig(optimizer=optimizer, initial_lr=2e-3, transformer_lr_ratio=0.1))
    assert type(opt).__name__.lower() == optimizer
    cnn, transformer = opt.param_groups
    assert cnn["lr"] == pytest.approx(2e-3) and transformer["lr"] == pytest.approx(2e-4)
