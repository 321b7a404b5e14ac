"""nnU-Net v2's ``2d`` configuration: a 2D UNet trained on single slices of the 3d_fullres data.

nnU-Net plans it from the 3d_fullres target spacing and median shape without their first axis
(``ExperimentPlanner.plan_experiment``: ``fullres_spacing_transposed[1:]``), with its 2D constants
(``default_experiment_planner.py``, nnunetv2 2.x):

- initial patch ``1/spacing`` scaled to the area of 2048^2, clipped to the median in-plane shape;
- topology by the same pooling rules as 3D (:func:`MaskMedCore.data.planner.network_topology` on 2 axes,
  no stage cap: nnU-Net passes 999999);
- features ``min(32 * 2**i, 512)`` (``UNet_max_features_2d``);
- memory: ``UNet_reference_val_2d`` = 85e6 feature-map voxels fit 8 GB at batch 12; the patch shrinks while
  ``estimate / 12 * 2 > reference`` (nnU-Net's condition, which guarantees room for batch 2);
- batch ``round(reference / estimate * 12)``, at most 5 % of the dataset's voxels per batch, at least 2.

The plan keeps 3d_fullres's spacing and normalisation, so both configurations share the preprocessed
cases; its ``patch_size`` is ``(1, H, W)`` (one slice of the preprocessed volume) and its kernels/strides
are (H, W) pairs, which make ``PlanConfig.model_config`` a 2D network.

Departure: nnU-Net transposes every case so that the axis with the coarsest spacing comes first and slices
across it; MaskMed keeps array order (D, H, W) and always slices along D (axial for the usual
LPS/RAS-ordered scans, where D is also the coarse axis of thick-slice data). For data whose coarse axis is
not D, the 2D slices are not the in-plane ones nnU-Net would use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MaskMedCore.config.model_config import default_features
from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.data.planner import (
    MAX_BATCH_DATASET_FRACTION,
    MIN_BATCH_SIZE,
    REFERENCE_GPU_GB,
    Topology,
    _shrink_patch,
    feature_map_voxels,
    network_topology,
)
from MaskMedCore.errors import ConfigError

INITIAL_PATCH_PIXELS = 2048**2
"""nnU-Net's initial 2D patch area, before clipping to the median shape."""
REFERENCE_FEATURE_MAP_PIXELS_2D = 85_000_000
"""nnU-Net's ``UNet_reference_val_2d``: feature-map pixels that fit in 8 GB at ``REFERENCE_BATCH_SIZE_2D``."""
REFERENCE_BATCH_SIZE_2D = 12
MAX_FEATURES_2D = 512


def features_2d(n_stages: int) -> tuple[int, ...]:
    """nnU-Net's 2D feature rule: ``min(32 * 2**i, 512)``."""
    return default_features(n_stages, cap=MAX_FEATURES_2D)


def plan_2d(
    fullres: PlanConfig,
    num_cases: int,
    *,
    gpu_memory_gb: float = 8.0,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> PlanConfig:
    """The ``2d`` configuration of a ``3d_fullres`` plan (rules in the module docstring).

    Args:
        fullres: the dataset's 3d_fullres plan; its spacing, normalisation and median shape are used.
        num_cases: training cases, for the 5 % batch cap (nnU-Net: median voxels x numTraining).
        gpu_memory_gb: GPU memory to size the patch and batch for.
        patch_size: (H, W) slice patch instead of the automatic one (padded to a multiple of its stride).
        batch_size: fixed batch size instead of nnU-Net's rule.

    Raises:
        ConfigError: a bad argument, or a slice too small to downsample once.
    """
    if not gpu_memory_gb > 0:
        raise ConfigError(f"gpu_memory_gb must be > 0, got {gpu_memory_gb}")
    if num_cases < 1:
        raise ConfigError(f"num_cases must be >= 1, got {num_cases}")
    spacing = fullres.target_spacing[1:]
    median = fullres.median_shape[1:]
    K = fullres.num_classes
    reference = REFERENCE_FEATURE_MAP_PIXELS_2D * gpu_memory_gb / REFERENCE_GPU_GB

    def estimate(topo: Topology) -> int:
        return feature_map_voxels(topo.patch_size, topo.strides, features_2d(len(topo.strides)), K)

    if patch_size is not None:
        if len(patch_size) != 2 or any(int(p) < 1 for p in patch_size):
            raise ConfigError(f"a 2d patch_size is 2 positive integers (H, W), got {list(patch_size)}")
        topo = network_topology(spacing, patch_size)
    else:
        inv = 1.0 / np.asarray(spacing, dtype=np.float64)
        initial = np.round(inv * (INITIAL_PATCH_PIXELS / np.prod(inv)) ** 0.5).astype(int)
        initial = np.maximum(np.minimum(initial, median), 1)
        topo = network_topology(spacing, initial)
        # nnU-Net shrinks while estimate / ref_bs * 2 > reference, i.e. estimate > reference * ref_bs / 2.
        budget = reference * REFERENCE_BATCH_SIZE_2D / 2
        topo = _shrink_patch(topo, spacing, median, None, budget, estimate)
    if len(topo.strides) < 2:
        raise ConfigError(
            f"slice patch {topo.patch_size} is too small to downsample even once at in-plane spacing {spacing}; "
            "the 2d configuration needs slices of at least 8 x 8 pixels"
        )
    if batch_size is None:
        by_memory = round(reference / estimate(topo) * REFERENCE_BATCH_SIZE_2D)
        dataset_voxels = float(np.prod(fullres.median_shape, dtype=np.float64)) * num_cases
        by_dataset = round(dataset_voxels * MAX_BATCH_DATASET_FRACTION / float(np.prod(topo.patch_size)))
        batch_size = max(min(by_memory, by_dataset), MIN_BATCH_SIZE)
    return fullres.replace(
        patch_size=(1, *topo.patch_size),
        batch_size=int(batch_size),
        features_per_stage=features_2d(len(topo.strides)),
        kernel_sizes=topo.kernel_sizes,
        strides=topo.strides,
    )
