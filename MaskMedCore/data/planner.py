"""Experiment planning: fingerprint -> PlanConfig (nnU-Net v2 §2.3, §2.4, §2.6; ExperimentPlanner, 3d_fullres).

Rules, as in nnU-Net v2:

- target spacing: the median spacing per axis; when the coarsest axis is more than 3x coarser than
  the others *and* has fewer than a third of their voxels, it takes the 10th percentile of its
  spacings instead (but stays above the other axes' spacing);
- normalisation per channel name (case-insensitive): ``CT`` -> ``ct`` with the dataset's
  foreground mean/std and 0.5/99.5 percentiles; ``noNorm`` -> ``none``; anything else -> ``zscore``;
- topology (:func:`network_topology`): pool an axis while it is >= 8 voxels and its spacing is
  within 2x of the finest; its kernel is 3 once within 2x, else 1; first stride (1, 1, 1); the
  bottleneck kernel is 3x3x3; the patch is padded to a multiple of the total stride;
- patch: proportional to 1/spacing with the volume of 256^3, clipped to the median shape, then
  shrunk (axis with the largest patch/median ratio first) while the UNet's feature-map estimate
  exceeds 560e6 * (gpu_memory_gb / 8) voxels (nnU-Net's reference at batch size 2);
- features ``min(32 * 2**i, 320)``; batch size ``round(2 * reference / estimate)``, at most 5 % of the
  dataset's voxels per batch, at least 2.

Departures from nnU-Net:

- no axis transpose: plans stay in array order (D, H, W); the rules are per axis, so the topology
  is the same up to the axis order;
- at most ``max_stages`` stages (default 6; nnU-Net has no cap, which gives 7 stages only for
  patches of >= 256 voxels along an axis);
- ``rescale_to_0_1``/``rgb_to_0_1`` channel names fall back to ``zscore``;
- cases are always cropped to non-zero and ``zscore`` then always uses the non-zero mask
  (nnU-Net does the latter only when cropping shrinks the median case below 75 %);
- the memory estimate counts the UNet's feature maps only, not the MaskMed head and bridge;
- an explicit ``patch_size`` is padded up to a multiple of its total stride, like nnU-Net's own;
- a second configuration, ``3d_cpu`` (:func:`cpu_plan`, saved as ``plan_cpu.json`` beside ``plan.json``),
  is sized for training on a CPU, where time, not memory, is the limit. nnU-Net has no such
  configuration (the idea is TotalSegmentator's smaller "fast" models). It keeps ``3d_fullres``'s target
  spacing and normalisation, so both share the preprocessed cases, and applies nnU-Net's own shrinking
  rule (the axis with the largest patch/median-shape ratio first, one total stride at a time) to
  ``3d_fullres``'s patch until the feature-map estimate is under ``CPU_FEATURE_MAP_VOXELS`` = 70e6
  (nnU-Net's budget scaled to a 1 GB GPU). Its batch size follows nnU-Net's memory rule under that
  budget, never above ``3d_fullres``'s batch (which carries the 5 % dataset cap) and at least 2. A
  6.5 x 0.78 x 0.78 mm brain MR (median shape 24 x 256 x 256) goes from 24 x 256 x 256 to 12 x 128 x 128
  (about 58^3 voxels); small patches such as MSD hippocampus's 40 x 56 x 40 (4 stages, estimate 19e6)
  stay as they are, batch included. An explicit ``patch_size`` is kept by both configurations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from MaskMedCore.config.model_config import default_features
from MaskMedCore.config.plan_config import ChannelNormalization, PlanConfig
from MaskMedCore.config.validation import check_choice
from MaskMedCore.data.dataset import RawDataset
from MaskMedCore.data.preprocessing import target_shape
from MaskMedCore.errors import ConfigError, DataError

Triplet = tuple[int, int, int]

ANISO_THRESHOLD = 3.0
MIN_FEATURE_MAP_SIZE = 4
INITIAL_PATCH_VOXELS = 256**3
REFERENCE_FEATURE_MAP_VOXELS = 560_000_000
"""nnU-Net's UNet_reference_val_3d: feature-map voxels that fit in 8 GB at batch size 2."""
REFERENCE_GPU_GB = 8.0
REFERENCE_BATCH_SIZE = 2
MAX_BATCH_DATASET_FRACTION = 0.05
MIN_BATCH_SIZE = 2
CPU_FEATURE_MAP_VOXELS = REFERENCE_FEATURE_MAP_VOXELS // 8
"""Feature-map budget of the ``3d_cpu`` configuration: nnU-Net's reference scaled to a 1 GB GPU (70e6)."""
CONFIGURATIONS = ("3d_fullres", "3d_cpu", "2d")
PLAN_FILES = {"3d_fullres": "plan.json", "3d_cpu": "plan_cpu.json", "2d": "plan_2d.json"}
"""Where each configuration's plan is kept in the preprocessed folder."""


class Topology(NamedTuple):
    """A UNet topology for one spacing and patch.

    Attributes:
        strides: per-stage (D, H, W) strides, strides[0] = (1, 1, 1).
        kernel_sizes: per-stage (D, H, W) conv kernels.
        patch_size: the patch padded to a multiple of ``divisor``.
        divisor: the total stride (D, H, W).
    """

    strides: tuple[Triplet, ...]
    kernel_sizes: tuple[Triplet, ...]
    patch_size: Triplet
    divisor: Triplet


def network_topology(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    max_stages: int | None = None,
    min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
) -> Topology:
    """Strides and kernels for ``patch_size`` at ``spacing`` (nnU-Net's get_pool_and_conv_props rules).

    Each step pools every axis that is still at least ``2 * min_feature_map_size`` voxels and whose
    current spacing is within 2x of the finest current spacing among those axes. An axis's kernel
    becomes 3 once its spacing is within 2x of the finest spacing and stays 3. Works on 3 axes
    (D, H, W) or, for the ``2d`` configuration, 2 (H, W).
    """
    spacing = [float(s) for s in spacing]
    size = [int(s) for s in patch_size]
    n = len(spacing)
    if n not in (2, 3) or len(size) != n or min(size) < 1 or min(spacing) <= 0:
        raise ConfigError(f"need 2 or 3 positive spacings and as many patch sizes, got {spacing} and {size}")
    kernel = [1] * n
    strides: list[Triplet] = [(1,) * n]
    kernels: list[Triplet] = []
    pools = [0] * n
    while max_stages is None or len(strides) < max_stages:
        big_enough = [a for a in range(n) if size[a] >= 2 * min_feature_map_size]
        if not big_enough:
            break
        finest = min(spacing[a] for a in big_enough)
        axes = [a for a in big_enough if spacing[a] / finest < 2]
        finest_all = min(spacing)
        kernel = [3 if kernel[a] == 3 or spacing[a] / finest_all < 2 else 1 for a in range(n)]
        kernels.append(tuple(kernel))
        stride = tuple(2 if a in axes else 1 for a in range(n))
        strides.append(stride)
        for a in axes:
            pools[a] += 1
            spacing[a] *= 2
            size[a] = -(-size[a] // 2)  # ceil
    kernels.append((3,) * n)  # bottleneck
    divisor = tuple(2**p for p in pools)
    padded = tuple(-(-int(p) // d) * d for p, d in zip(patch_size, divisor))
    return Topology(tuple(strides), tuple(kernels), padded, divisor)


def fullres_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[float, float, float]:
    """Median spacing with nnU-Net's anisotropy rule.

    Args:
        spacings: ``(N, 3)`` per-case (D, H, W) spacings.
        shapes: ``(N, 3)`` per-case (D, H, W) shapes after cropping.
    """
    spacings = np.asarray(spacings, dtype=np.float64)
    target = np.median(spacings, axis=0)
    median_size = np.median(np.asarray(shapes, dtype=np.float64), axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISO_THRESHOLD * max(target[others])
    aniso_voxels = median_size[worst] * ANISO_THRESHOLD < min(median_size[others])
    if aniso_spacing and aniso_voxels:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
    return tuple(float(t) for t in target)


def normalization_for(channel_name: str, stats: Mapping[str, Any] | None) -> ChannelNormalization:
    """The normalisation scheme nnU-Net picks from a channel name."""
    key = channel_name.strip().lower()
    if key == "nonorm":
        return ChannelNormalization("none")
    if key != "ct":
        return ChannelNormalization("zscore")
    if not stats or stats.get("mean") is None:
        raise DataError(
            f"channel {channel_name!r} needs CT normalisation but the fingerprint has no foreground voxels for it; "
            "check that the label maps contain foreground (values > 0)"
        )
    return ChannelNormalization(
        "ct",
        mean=float(stats["mean"]),
        std=max(float(stats["std"]), 1e-8),
        lower=float(stats["percentile_00_5"]),
        upper=float(stats["percentile_99_5"]),
    )


def feature_map_voxels(
    patch_size: Sequence[int],
    strides: Sequence[Triplet],
    features_per_stage: Sequence[int],
    num_classes: int,
    n_conv_per_stage: int = 2,
    n_conv_per_stage_decoder: int = 2,
) -> int:
    """Feature-map voxels of one sample in a plain UNet (nnU-Net's compute_conv_feature_map_size).

    Counts every conv output: encoder convs, decoder transposed conv + convs, and one K-channel
    output per decoder stage (deep supervision).
    """
    size = np.asarray(patch_size, dtype=np.int64)
    voxels = []
    for stride in strides:
        size = size // np.asarray(stride)
        voxels.append(int(np.prod(size)))
    total = sum(n_conv_per_stage * f * v for f, v in zip(features_per_stage, voxels))
    for f, v in zip(features_per_stage[:-1], voxels[:-1]):
        total += (1 + n_conv_per_stage_decoder) * f * v + num_classes * v
    return int(total)


def plan_dataset(
    dataset: RawDataset,
    fingerprint: Mapping[str, Any],
    *,
    gpu_memory_gb: float = 8.0,
    patch_size: Sequence[int] | None = None,
    max_stages: int = 6,
    batch_size: int | None = None,
    target_spacing: Sequence[float] | None = None,
    configuration: str = "3d_fullres",
) -> PlanConfig:
    """Plan the 3D full-resolution (or the CPU-sized) configuration of ``dataset``.

    Args:
        dataset: the raw dataset (names, channels, labels).
        fingerprint: from :func:`MaskMedCore.data.fingerprint.compute_fingerprint`.
        gpu_memory_gb: GPU memory the patch and batch size are sized for.
        patch_size: (D, H, W) patch instead of the automatic one; the topology is derived for it
            and it is padded to a multiple of the total stride.
        max_stages: the most UNet stages (resolutions).
        batch_size: fixed batch size instead of nnU-Net's rule.
        target_spacing: (D, H, W) spacing instead of the median-spacing rule.
        configuration: ``3d_fullres`` (nnU-Net's), ``3d_cpu`` (:func:`cpu_plan` of the former; an
            explicit ``patch_size`` or ``batch_size`` is kept) or ``2d`` (``planner_2d.plan_2d`` of the former,
            patch and batch by nnU-Net's 2D rules).

    Raises:
        DataError: the fingerprint does not belong to ``dataset``, or a CT channel has no statistics.
        ConfigError: an argument is invalid or the patch is too small for a 2-stage UNet.
    """
    if list(fingerprint.get("channel_names", [])) != list(dataset.channel_names):
        raise DataError(
            f"fingerprint channel_names {fingerprint.get('channel_names')} do not match dataset.json "
            f"{list(dataset.channel_names)}; recompute the fingerprint"
        )
    check_choice("configuration", configuration, CONFIGURATIONS)
    if not gpu_memory_gb > 0:
        raise ConfigError(f"gpu_memory_gb must be > 0, got {gpu_memory_gb}")
    if max_stages < 2:
        raise ConfigError(f"max_stages must be >= 2, got {max_stages}")
    cases = fingerprint["cases"]
    spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
    shapes = np.array([c["shape_after_crop"] for c in cases], dtype=np.float64)
    if target_spacing is None:
        spacing = fullres_target_spacing(spacings, shapes)
    else:
        spacing = tuple(float(s) for s in target_spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ConfigError(f"target_spacing must be 3 positive numbers (D, H, W), got {target_spacing}")
    new_shapes = [target_shape(tuple(s), tuple(sp), spacing) for s, sp in zip(shapes.astype(int), spacings)]
    median_shape = tuple(int(round(m)) for m in np.median(np.array(new_shapes), axis=0))

    stats = fingerprint["foreground_intensity_properties_per_channel"]
    normalization = tuple(normalization_for(name, stats.get(str(c))) for c, name in enumerate(dataset.channel_names))
    K = len(dataset.labels)
    budget = REFERENCE_FEATURE_MAP_VOXELS * gpu_memory_gb / REFERENCE_GPU_GB

    def estimate(topo: Topology) -> int:
        return feature_map_voxels(topo.patch_size, topo.strides, default_features(len(topo.strides)), K)

    if patch_size is not None:
        if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
            raise ConfigError(f"patch_size must be 3 positive integers (D, H, W), got {list(patch_size)}")
        topo = network_topology(spacing, patch_size, max_stages)
    else:
        topo = _fit_patch(spacing, median_shape, max_stages, budget, estimate)
    if len(topo.strides) < 2:
        raise ConfigError(
            f"patch_size {topo.patch_size} is too small to downsample even once at spacing {spacing}; "
            f"use at least {2 * MIN_FEATURE_MAP_SIZE} voxels along the finest-spacing axes"
        )
    fixed_batch = batch_size is not None
    if batch_size is None:
        batch_size = _batch_size(estimate(topo), budget, topo.patch_size, median_shape, len(cases))
    plan = PlanConfig(
        dataset_name=dataset.name,
        channel_names=dataset.channel_names,
        labels=dataset.labels,
        file_ending=dataset.file_ending,
        normalization=normalization,
        target_spacing=spacing,
        patch_size=topo.patch_size,
        batch_size=int(batch_size),
        features_per_stage=default_features(len(topo.strides)),
        kernel_sizes=topo.kernel_sizes,
        strides=topo.strides,
        median_shape=median_shape,
        crop_to_nonzero=True,
    )
    if configuration == "3d_cpu":
        return cpu_plan(plan, keep_patch=patch_size is not None, keep_batch=fixed_batch)
    if configuration == "2d":
        from MaskMedCore.data.planner_2d import plan_2d  # planner_2d builds on this module

        return plan_2d(plan, len(cases), gpu_memory_gb=gpu_memory_gb)
    return plan


def cpu_plan(plan: PlanConfig, *, keep_patch: bool = False, keep_batch: bool = False) -> PlanConfig:
    """The ``3d_cpu`` configuration of a ``3d_fullres`` plan (the rule is in the module docstring).

    Args:
        plan: the ``3d_fullres`` plan; its spacing, normalisation and median shape are kept.
        keep_patch: keep the plan's patch and topology (it was given explicitly).
        keep_batch: keep the plan's batch size (it was given explicitly).
    """
    divisor = tuple(int(d) for d in np.prod(np.asarray(plan.strides), axis=0))
    topo = Topology(plan.strides, plan.kernel_sizes, plan.patch_size, divisor)

    def estimate(t: Topology) -> int:
        return feature_map_voxels(t.patch_size, t.strides, default_features(len(t.strides)), plan.num_classes)

    if not keep_patch:
        # A smaller patch never has more stages, so the 3d_fullres stage count is the cap it was planned with.
        max_stages = len(plan.strides)
        spacing, median = plan.target_spacing, plan.median_shape
        topo = _shrink_patch(topo, spacing, median, max_stages, CPU_FEATURE_MAP_VOXELS, estimate, strict=False)
    batch = plan.batch_size
    if not keep_batch:
        by_memory = round(CPU_FEATURE_MAP_VOXELS / estimate(topo) * REFERENCE_BATCH_SIZE)
        batch = max(min(by_memory, plan.batch_size), MIN_BATCH_SIZE)
    return plan.replace(
        patch_size=topo.patch_size,
        batch_size=int(batch),
        features_per_stage=default_features(len(topo.strides)),
        kernel_sizes=topo.kernel_sizes,
        strides=topo.strides,
    )


def _fit_patch(spacing, median_shape, max_stages, budget, estimate) -> Topology:
    inv = 1.0 / np.asarray(spacing)
    initial = np.round(inv * (INITIAL_PATCH_VOXELS / np.prod(inv)) ** (1 / 3)).astype(int)
    initial = np.maximum(np.minimum(initial, median_shape), 1)
    topo = network_topology(spacing, initial, max_stages)
    return _shrink_patch(topo, spacing, median_shape, max_stages, budget, estimate)


def _shrink_patch(topo: Topology, spacing, median_shape, max_stages, budget, estimate, strict=True) -> Topology:
    """nnU-Net's rule: while over ``budget``, shrink the axis with the largest patch/median ratio by its stride.

    Where no axis can shrink any more, ``strict`` raises; otherwise the smallest patch is returned.
    """
    while estimate(topo) > budget:
        ratios = np.asarray(topo.patch_size) / np.asarray(median_shape)
        shrinkable = [
            a for a in range(len(topo.patch_size)) if topo.patch_size[a] - topo.divisor[a] >= MIN_FEATURE_MAP_SIZE
        ]
        if not shrinkable and not strict:
            break
        if not shrinkable:
            raise ConfigError(
                f"gpu_memory_gb={budget * REFERENCE_GPU_GB / REFERENCE_FEATURE_MAP_VOXELS:g} is too small: even "
                f"patch {topo.patch_size} exceeds the memory estimate; give more memory or an explicit patch_size"
            )
        axis = max(shrinkable, key=lambda a: ratios[a])
        candidate = list(topo.patch_size)
        candidate[axis] -= topo.divisor[axis]
        topo = network_topology(spacing, candidate, max_stages)
    return topo


def _batch_size(estimate: int, budget: float, patch: Triplet, median_shape: Triplet, num_cases: int) -> int:
    by_memory = round(budget / estimate * REFERENCE_BATCH_SIZE)
    dataset_voxels = float(np.prod(median_shape)) * num_cases
    by_dataset = round(dataset_voxels * MAX_BATCH_DATASET_FRACTION / float(np.prod(patch)))
    return int(max(min(by_memory, by_dataset), MIN_BATCH_SIZE))
