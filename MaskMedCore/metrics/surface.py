"""Surface metrics: 95th-percentile Hausdorff distance (HD95) and normalised surface Dice (NSD).

Definitions (the same as MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_surface_dice(use_subvoxels=False)``, and Nikolov et al. 2021, "Clinically applicable
segmentation of head and neck anatomy for radiotherapy", for the NSD idea):

- The *surface* of a binary mask is its set of boundary voxels: mask voxels with at least one
  6-connected neighbour outside the mask (``mask & ~binary_erosion(mask)``). Voxels on the image
  border count as boundary voxels (everything outside the image is background).
- Distances are Euclidean between voxel centres, in mm, using the voxel spacing (D, H, W), from
  each surface voxel of one mask to the nearest surface voxel of the other. Both masks are first
  cropped to the bounding box of their union, which changes no distance (every surface voxel lies
  in it). Two exact methods give the same distances (to ~1e-13 mm; a test compares them):
  ``"edt"``, the plain reference, reads ``scipy.ndimage.distance_transform_edt`` of the other
  surface, and costs time and float64 memory in proportion to the bounding-box volume; ``"kdtree"``
  (default) queries a ``scipy.spatial.cKDTree`` of the other surface's voxel coordinates in mm and
  costs in proportion to the number of surface voxels. On a 200x512x512 volume with a large organ
  the EDT takes ~6 s per class (~27 s and 2.6 GB when two stray voxels in opposite corners stretch
  the box to the whole volume), the k-d tree under 1 s.
- HD95 = max(P95 of the distances from the predicted surface to the reference surface,
  P95 of the distances from the reference surface to the predicted surface), with numpy's linear
  percentile interpolation. This "max of the two directed percentiles" is the symmetric HD95 of
  MONAI, DeepMind's ``surface-distance`` and the BraTS evaluation; medpy's ``hd95`` instead takes
  the percentile of both distance sets pooled, which is never larger.
- NSD = (number of predicted surface voxels within ``tolerance_mm`` of the reference surface
  + number of reference surface voxels within ``tolerance_mm`` of the predicted surface)
  / (total number of surface voxels of both). "Within" includes equality, with 1e-6 mm of slack
  (``TOLERANCE_SLACK_MM``) so that a distance such as 3 x 1.1 mm, which float64 rounds to
  3.3000000000000003, counts as within a 3.3 mm tolerance.

Empty cases: both masks empty -> HD95 0, NSD 1; exactly one empty -> HD95 nan (undefined), NSD 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

SURFACE_DISTANCE_METHODS = ("kdtree", "edt")
TOLERANCE_SLACK_MM = 1e-6


class SurfaceMetrics(NamedTuple):
    """Surface metrics of one class in one case (plain floats)."""

    hd95: float  # mm; 0 when both masks are empty, nan when exactly one is
    nsd: float  # in [0, 1]; 1 when both masks are empty, 0 when exactly one is


def _check_inputs(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, ...]:
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred_mask {pred_mask.shape} and ref_mask {ref_mask.shape} must have the same shape")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred_mask.ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {pred_mask.ndim} positive finite values in mm (D, H, W), got {spacing}")
    return spacing


def _union_bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """Tight bounding box of a non-empty mask, one slice per axis."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask: voxels with a 6-connected (face) neighbour outside it.

    Args:
        mask: (D, H, W) bool mask.

    Returns:
        (D, H, W) bool surface; voxels on the array border count as surface.
    """
    mask = mask.astype(bool, copy=False)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], method: str = "kdtree"
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty binary masks.

    Args:
        pred_mask: (D, H, W) bool prediction, not empty.
        ref_mask: (D, H, W) bool reference, same shape, not empty.
        spacing: voxel spacing (D, H, W) in mm.
        method: ``"kdtree"`` (fast) or ``"edt"`` (reference); see the module docstring.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: float64 arrays with, for every predicted surface voxel, the
        distance to the nearest reference surface voxel, and the other way round.

    Raises:
        ValueError: shapes differ, the spacing or method is invalid, or a mask is empty.
    """
    spacing = _check_inputs(pred_mask, ref_mask, spacing)
    if method not in SURFACE_DISTANCE_METHODS:
        raise ValueError(f"method must be one of {SURFACE_DISTANCE_METHODS}, got {method!r}")
    pred_mask = pred_mask.astype(bool, copy=False)
    ref_mask = ref_mask.astype(bool, copy=False)
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface_distances needs two non-empty masks; see surface_metrics for the empty cases")
    box = _union_bbox(pred_mask | ref_mask)
    pred_surface = surface_voxels(pred_mask[box])
    ref_surface = surface_voxels(ref_mask[box])
    if method == "kdtree":
        scale = np.asarray(spacing, dtype=np.float64)
        pred_points = np.argwhere(pred_surface) * scale  # (n_pred, 3) voxel centres in mm
        ref_points = np.argwhere(ref_surface) * scale
        pred_to_ref = cKDTree(ref_points, leafsize=32).query(pred_points, k=1)[0]
        ref_to_pred = cKDTree(pred_points, leafsize=32).query(ref_points, k=1)[0]
        return pred_to_ref, ref_to_pred
    # The EDT gives, at every voxel, the distance to the nearest zero, i.e. the nearest surface voxel.
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    pred_to_ref = to_ref[pred_surface]
    del to_ref
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    ref_to_pred = to_pred[ref_surface]
    return pred_to_ref, ref_to_pred


def surface_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = 2.0,
    percentile: float = 95.0,
    method: str = "kdtree",
) -> SurfaceMetrics:
    """HD95 and NSD of one class, computing the surface distances once.

    Args:
        pred_mask: (D, H, W) bool prediction.
        ref_mask: (D, H, W) bool reference, same shape.
        spacing: voxel spacing (D, H, W) in mm.
        tolerance_mm: NSD tolerance in mm (>= 0).
        percentile: the Hausdorff percentile in [0, 100]; 100 gives the classic Hausdorff distance.
        method: surface-distance method, ``"kdtree"`` or ``"edt"``.

    Returns:
        ``SurfaceMetrics(hd95, nsd)``; see the module docstring for the empty cases.

    Raises:
        ValueError: shapes differ, or the spacing, tolerance or percentile is invalid.
    """
    _check_inputs(pred_mask, ref_mask, spacing)
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    pred_any, ref_any = bool(np.any(pred_mask)), bool(np.any(ref_mask))
    if not pred_any and not ref_any:
        return SurfaceMetrics(hd95=0.0, nsd=1.0)
    if pred_any != ref_any:
        return SurfaceMetrics(hd95=float("nan"), nsd=0.0)
    pred_to_ref, ref_to_pred = surface_distances(pred_mask, ref_mask, spacing, method)
    hd = max(float(np.percentile(pred_to_ref, percentile)), float(np.percentile(ref_to_pred, percentile)))
    limit = tolerance_mm + TOLERANCE_SLACK_MM
    within = int(np.count_nonzero(pred_to_ref <= limit)) + int(np.count_nonzero(ref_to_pred <= limit))
    nsd = within / (pred_to_ref.size + ref_to_pred.size)
    return SurfaceMetrics(hd95=hd, nsd=float(nsd))


def hausdorff_distance_95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """HD95 in mm of two binary masks; 0 when both are empty, nan when exactly one is."""
    return surface_metrics(pred_mask, ref_mask, spacing).hd95


def normalized_surface_dice(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> float:
    """NSD at ``tolerance_mm`` of two binary masks; 1 when both are empty, 0 when exactly one is."""
    return surface_metrics(pred_mask, ref_mask, spacing, tolerance_mm=tolerance_mm).nsd
