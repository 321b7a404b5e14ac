"""Planning rules of nnU-Net v2: target spacing, normalisation, topology, patch and batch size."""

from pathlib import Path

import numpy as np
import pytest
from raw_dataset_builders import link_spleen_msd, nnunet_dataset

from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.data.dataset import RawCase, RawDataset, load_dataset
from MaskMedCore.data.fingerprint import compute_fingerprint
from MaskMedCore.data.planner import (
    CPU_FEATURE_MAP_VOXELS,
    REFERENCE_FEATURE_MAP_VOXELS,
    cpu_plan,
    feature_map_voxels,
    fullres_target_spacing,
    network_topology,
    normalization_for,
    plan_dataset,
)
from MaskMedCore.data.preprocessed_store import preprocessing_key
from MaskMedCore.errors import ConfigError, DataError

S2 = (2, 2, 2)

# upstream-facts §2.6: topologies computed with nnU-Net's get_pool_and_conv_props (min size 4)
UPSTREAM_TOPOLOGIES = [
    ((1, 1, 1), (128, 128, 128), [(1, 1, 1)] + [S2] * 5, [(3, 3, 3)] * 6),
    ((2.0, 0.8, 0.8), (96, 160, 160), [(1, 1, 1), (1, 2, 2)] + [S2] * 4, [(1, 3, 3)] + [(3, 3, 3)] * 5),
    ((3.0, 0.78, 0.78), (64, 192, 160), [(1, 1, 1), (1, 2, 2)] + [S2] * 4, [(1, 3, 3)] + [(3, 3, 3)] * 5),
    ((1.5, 0.8, 0.8), (80, 192, 160), [(1, 1, 1)] + [S2] * 4 + [(1, 2, 2)], [(3, 3, 3)] * 6),
]


@pytest.mark.parametrize("spacing, patch, strides, kernels", UPSTREAM_TOPOLOGIES)
def test_topology_matches_upstream_table(spacing, patch, strides, kernels):
    topo = network_topology(spacing, patch)
    assert topo.patch_size == patch
    assert list(topo.strides) == strides
    assert list(topo.kernel_sizes) == kernels
    assert all(p % d == 0 for p, d in zip(topo.patch_size, topo.divisor))


def test_topology_pads_patch_and_respects_max_stages():
    topo = network_topology((1, 1, 1), (100, 70, 9))
    assert topo.divisor == (16, 16, 2) and topo.patch_size == (112, 80, 10)  # 100 -> 50 -> 25 -> 13 -> 7
    capped = network_topology((1, 1, 1), (128, 128, 128), max_stages=4)
    assert len(capped.strides) == 4 and capped.divisor == (8, 8, 8)


def test_target_spacing_median_and_anisotropy_rule():
    iso = fullres_target_spacing(np.array([[1.0, 1, 1], [1.2, 0.8, 0.8], [1.4, 0.9, 0.9]]), np.full((3, 3), 100))
    assert iso == pytest.approx((1.2, 0.9, 0.9))
    spacings = np.array([[5.0, 0.8, 0.8], [4.0, 0.7, 0.7], [3.0, 0.75, 0.75], [2.5, 0.8, 0.8], [6.0, 0.9, 0.9]])
    thin_stack = np.array([[40, 512, 512]] * 5)
    target = fullres_target_spacing(spacings, thin_stack)
    assert target[0] == pytest.approx(np.percentile(spacings[:, 0], 10))  # 10th percentile, not the median 4.0
    assert target[1:] == pytest.approx((0.8, 0.8))
    # Many voxels along the thick axis: no anisotropy handling, the median stays.
    assert fullres_target_spacing(spacings, np.array([[400, 512, 512]] * 5))[0] == pytest.approx(4.0)
    # The 10th percentile never drops to the in-plane spacing.
    low = np.array([[5.0, 0.8, 0.8]] * 4 + [[0.5, 0.8, 0.8]] * 2)
    assert fullres_target_spacing(low, np.array([[40, 512, 512]] * 6))[0] == pytest.approx(0.8 + 1e-5)


def test_normalization_from_channel_name():
    stats = {"mean": 80.0, "std": 40.0, "percentile_00_5": -50.0, "percentile_99_5": 250.0}
    ct = normalization_for("ct", stats)
    assert (ct.scheme, ct.mean, ct.std, ct.lower, ct.upper) == ("ct", 80.0, 40.0, -50.0, 250.0)
    assert normalization_for("CT", stats).scheme == "ct"
    assert normalization_for("noNorm", None).scheme == "none"
    assert normalization_for("T1", stats).scheme == "zscore"
    with pytest.raises(DataError, match="no foreground voxels"):
        normalization_for("CT", {"mean": None})


def _fake(num_cases, shape, spacing, channels=("MR",), num_labels=3):
    dataset = RawDataset(
        folder=Path("/nonexistent"),
        name="Fake",
        channel_names=tuple(channels),
        labels={"background": 0, **{f"c{k}": k for k in range(1, num_labels)}},
        file_ending=".nii.gz",
        cases=[RawCase(f"c{i}", (Path(f"c{i}_0000.nii.gz"),), None) for i in range(num_cases)],
    )
    stats = {"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}
    fingerprint = {
        "channel_names": list(channels),
        "cases": [{"spacing": list(spacing), "shape_after_crop": list(shape)}] * num_cases,
        "foreground_intensity_properties_per_channel": {str(c): stats for c in range(len(channels))},
    }
    return dataset, fingerprint


def test_automatic_patch_fits_the_memory_budget():
    dataset, fp = _fake(20, (160, 200, 200), (1.0, 1.0, 1.0))
    plans = {gb: plan_dataset(dataset, fp, gpu_memory_gb=gb) for gb in (4.0, 8.0, 16.0)}
    for gb, plan in plans.items():
        estimate = feature_map_voxels(plan.patch_size, plan.strides, plan.features_per_stage, 3)
        assert estimate <= REFERENCE_FEATURE_MAP_VOXELS * gb / 8
        assert all(p % t == 0 for p, t in zip(plan.patch_size, plan.model_config().total_strides()[-1]))
        assert plan.batch_size >= 2 and max(plan.features_per_stage) <= 320
    vol = {gb: np.prod(p.patch_size) for gb, p in plans.items()}
    assert vol[4.0] < vol[8.0] < vol[16.0]
    assert plans[8.0].median_shape == (160, 200, 200) and plans[8.0].target_spacing == (1.0, 1.0, 1.0)
    assert plans[8.0].features_per_stage == (32, 64, 128, 256, 320, 320)


def test_initial_patch_is_clipped_to_small_images():
    dataset, fp = _fake(5, (40, 50, 60), (1.0, 1.0, 1.0))
    plan = plan_dataset(dataset, fp)
    assert plan.patch_size == (40, 56, 64)  # the median shape padded to multiples of the total stride
    assert plan.batch_size >= 2


def test_explicit_patch_batch_and_spacing():
    dataset, fp = _fake(4, (40, 120, 120), (3.0, 0.8, 0.8))
    plan = plan_dataset(dataset, fp, patch_size=(16, 32, 32), batch_size=3)
    assert plan.patch_size == (16, 32, 32) and plan.batch_size == 3
    assert plan.strides[:2] == ((1, 1, 1), (1, 2, 2))  # z is too coarse to pool at first
    assert plan.kernel_sizes[0] == (1, 3, 3)
    coarser = plan_dataset(dataset, fp, patch_size=(16, 32, 32), target_spacing=(3.0, 1.6, 1.6))
    assert coarser.target_spacing == (3.0, 1.6, 1.6) and coarser.median_shape == (40, 60, 60)
    assert coarser.strides[1] == (2, 2, 2)  # 3.0 / 1.6 < 2: every axis pools
    assert PlanConfig.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("num_cases", "shape", "spacing", "max_stages", "fullres", "cpu"),
    [
        # the user's one-case brain MR of issue 16: 24 x 256 x 256 took ~15 s per step on 2 cores
        (1, (24, 256, 256), (6.5, 0.78, 0.78), 6, ((24, 256, 256), 2), ((12, 128, 128), 2)),
        (40, (90, 512, 512), (5.0, 0.8, 0.8), 6, ((32, 224, 224), 2), ((20, 96, 96), 2)),  # spleen-like CT
        (20, (160, 200, 200), (1.0, 1.0, 1.0), 6, ((96, 160, 160), 2), ((48, 80, 80), 2)),
        # MSD hippocampus and BraTS at 3 mm are under the CPU budget already: unchanged, batch included
        (200, (36, 50, 35), (1.0, 1.0, 1.0), 4, ((40, 56, 40), 7), ((40, 56, 40), 7)),
        (20, (52, 60, 50), (3.0, 3.0, 3.0), 6, ((56, 64, 56), 2), ((56, 64, 56), 2)),
    ],
)
def test_cpu_configuration_shrinks_the_patch_to_the_cpu_budget(num_cases, shape, spacing, max_stages, fullres, cpu):
    dataset, fp = _fake(num_cases, shape, spacing)
    full = plan_dataset(dataset, fp, max_stages=max_stages)
    small = plan_dataset(dataset, fp, max_stages=max_stages, configuration="3d_cpu")
    assert (full.patch_size, full.batch_size) == fullres
    assert (small.patch_size, small.batch_size) == cpu
    assert small == cpu_plan(full)
    assert preprocessing_key(small) == preprocessing_key(full)  # one preprocessed cache serves both
    assert feature_map_voxels(small.patch_size, small.strides, small.features_per_stage, 3) <= CPU_FEATURE_MAP_VOXELS
    assert np.prod(small.patch_size) <= 68**3  # the brain MR's: 58^3 voxels
    assert all(p % t == 0 for p, t in zip(small.patch_size, small.model_config().total_strides()[-1]))
    assert small.features_per_stage == full.features_per_stage[: len(small.strides)]


def test_cpu_configuration_keeps_an_explicit_patch_and_batch():
    dataset, fp = _fake(1, (24, 256, 256), (6.5, 0.78, 0.78))
    plan = plan_dataset(dataset, fp, patch_size=(24, 256, 256), batch_size=3, configuration="3d_cpu")
    assert (plan.patch_size, plan.batch_size) == ((24, 256, 256), 3)
    assert plan_dataset(dataset, fp, patch_size=(24, 256, 256), configuration="3d_cpu").batch_size == 2
    with pytest.raises(ConfigError, match="configuration is '3d_lowres'; expected one of '3d_fullres', '3d_cpu', '2d'"):
        plan_dataset(dataset, fp, configuration="3d_lowres")


def test_bad_arguments():
    dataset, fp = _fake(2, (40, 50, 60), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="too small to downsample"):
        plan_dataset(dataset, fp, patch_size=(4, 4, 4))
    with pytest.raises(ConfigError, match="gpu_memory_gb"):
        plan_dataset(dataset, fp, gpu_memory_gb=0)
    with pytest.raises(DataError, match="do not match"):
        plan_dataset(dataset, {**fp, "channel_names": ["CT", "PET"]})


def test_plan_of_a_synthetic_dataset(tmp_path):
    ds = load_dataset(nnunet_dataset(tmp_path, num_cases=2, channel_names=("CT", "noNorm"), spacing=(2.0, 1.0, 1.0)))
    plan = plan_dataset(ds, compute_fingerprint(ds, num_samples=10_000), patch_size=(8, 16, 16))
    assert [n.scheme for n in plan.normalization] == ["ct", "none"]
    assert plan.channel_names == ("CT", "noNorm") and plan.num_classes == 3
    assert plan.median_shape == (14, 17, 20) and plan.crop_to_nonzero
    assert plan.strides == ((1, 1, 1), (1, 2, 2), (2, 2, 2))


@pytest.mark.realdata
def test_spleen_ct_gets_ct_normalisation(shared_data, tmp_path):
    ds = load_dataset(link_spleen_msd(shared_data, tmp_path / "spleen"))
    plan = plan_dataset(ds, compute_fingerprint(ds, num_samples=50_000))
    (norm,) = plan.normalization
    assert norm.scheme == "ct" and norm.lower < norm.mean < norm.upper
    assert plan.target_spacing == pytest.approx((5.0, 0.795, 0.795), abs=1e-3)
    assert plan.strides[1] == (1, 2, 2)  # 5 mm slices are not pooled at first
