import pytest

from MaskMedCore.config import PlanConfig


@pytest.fixture
def small_plan() -> PlanConfig:
    return PlanConfig(
        dataset_name="unit",
        channel_names=("CT",),
        labels={"background": 0, "liver": 1, "spleen": 2},
        file_ending=".nii.gz",
        normalization=({"scheme": "ct", "mean": 50.0, "std": 80.0, "lower": -100.0, "upper": 300.0},),
        target_spacing=(3.0, 1.5, 1.5),
        patch_size=(16, 16, 16),
        batch_size=2,
        features_per_stage=(32, 64, 128, 256),
        kernel_sizes=((3, 3, 3),) * 4,
        strides=((1, 1, 1),) + ((2, 2, 2),) * 3,
        median_shape=(40, 80, 80),
    )
