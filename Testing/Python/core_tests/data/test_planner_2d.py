"""nnU-Net's 2d configuration (``data/planner_2d.py``): patch, batch and topology by nnU-Net's 2D rules."""

import pytest
from test_planner import _fake

from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.data.planner import feature_map_voxels, plan_dataset
from MaskMedCore.data.planner_2d import REFERENCE_FEATURE_MAP_PIXELS_2D, plan_2d
from MaskMedCore.data.preprocessed_store import preprocessing_key
from MaskMedCore.errors import ConfigError


def test_hippocampus_matches_nnunet_2d_plan():
    # nnunetv2 2.8.1's ExperimentPlanner on the benchmark's Dataset903_Hippocampus (160 cases, median 36x50x35,
    # 1 mm): 2d patch (56, 40), batch 225, strides ((1,1),(2,2),(2,2),(2,2)), features (32, 64, 128, 256).
    dataset, fp = _fake(160, (36, 50, 35), (1.0, 1.0, 1.0))
    full = plan_dataset(dataset, fp, max_stages=4)
    flat = plan_dataset(dataset, fp, max_stages=4, configuration="2d")
    assert flat.patch_size == (1, 56, 40) and flat.network_patch_size == (56, 40)
    assert flat.batch_size == 225
    assert flat.strides == ((1, 1), (2, 2), (2, 2), (2, 2)) and flat.kernel_sizes == ((3, 3),) * 4
    assert flat.features_per_stage == (32, 64, 128, 256)
    assert flat.spatial_dims == 2 and flat.mirror_axes == (1, 2)
    assert flat == plan_2d(full, 160)
    # same spacing and normalisation as 3d_fullres: one preprocessed cache serves both configurations
    assert preprocessing_key(flat) == preprocessing_key(full)
    assert flat.model_config("tiny").spatial_dims == 2
    assert PlanConfig.from_json(flat.to_json()) == flat


def test_large_slices_shrink_to_the_2d_memory_rule():
    # a 512 x 512 CT: nnU-Net keeps the whole slice (8 stages, features capped at 512) at batch 12
    dataset, fp = _fake(100, (120, 512, 512), (2.5, 0.8, 0.8))
    flat = plan_dataset(dataset, fp, configuration="2d")
    assert flat.patch_size == (1, 512, 512) and flat.batch_size == 12
    assert len(flat.strides) == 8 and max(flat.features_per_stage) == 512
    # a 0.5 GB GPU: the patch shrinks until the estimate is under nnU-Net's 2D reference x 12 / 2
    small = plan_2d(plan_dataset(dataset, fp), 100, gpu_memory_gb=0.5)
    estimate = feature_map_voxels(small.network_patch_size, small.strides, small.features_per_stage, 3)
    assert estimate <= REFERENCE_FEATURE_MAP_PIXELS_2D * 0.5 / 8 * 12 / 2
    assert small.network_patch_size[0] * small.network_patch_size[1] < 512 * 512
    assert small.batch_size >= 2


def test_in_plane_anisotropy_pools_the_finer_axis_first():
    dataset, fp = _fake(20, (40, 200, 100), (1.0, 0.5, 1.2))
    flat = plan_dataset(dataset, fp, configuration="2d")
    assert flat.strides[1] == (2, 1)  # H (0.5 mm) pools first, W (1.2 mm) is more than 2x coarser
    assert flat.kernel_sizes[0] == (3, 1)


def test_explicit_2d_patch_and_bad_arguments():
    dataset, fp = _fake(4, (30, 64, 64), (1.0, 1.0, 1.0))
    full = plan_dataset(dataset, fp)
    assert plan_2d(full, 4, patch_size=(30, 60), batch_size=3).patch_size == (1, 32, 64)
    with pytest.raises(ConfigError, match="2 positive integers"):
        plan_2d(full, 4, patch_size=(1, 32, 32))
    with pytest.raises(ConfigError, match="too small to downsample"):
        plan_2d(full, 4, patch_size=(4, 4))
    with pytest.raises(ConfigError, match="gpu_memory_gb"):
        plan_2d(full, 4, gpu_memory_gb=0)
    with pytest.raises(ConfigError, match="one slice"):
        full.replace(strides=((1, 1), (2, 2), (2, 2)), kernel_sizes=((3, 3),) * 3, features_per_stage=(8, 16, 32))
