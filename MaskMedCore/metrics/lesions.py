"""Lesions of a class and the BraTS 2023 lesion-wise Dice.

A *lesion* is a 3D connected component of a class mask with 26-connectivity (``scipy.ndimage.label``
with a 3x3x3 structure), the convention of the BraTS 2023 lesion-wise metrics.

``lesion_wise_dice`` re-implements (no code copied) the lesion-wise Dice of the BraTS 2023 challenge as
written in ``get_LesionWiseScores`` and ``get_LesionWiseResults`` of the repository
rachitsaluja/BraTS-2023-Metrics, file ``metrics.py`` at commit 43c905242b2eecf421d4ab2da7af8ece9777d322
(2023-10-12; the same code as ``eval.py`` at 0e272e697a193474ed75cef99cf2de110cc52d37, 2023-08-16),
together with that repository's README ("Methodology"):

1. Reference lesions merged by dilation: the reference mask is dilated ``dilation`` times with the
   18-neighbourhood structuring element (``generate_binary_structure(3, 2)``); the reference voxels inside
   one 26-connected component of the dilated mask form one lesion, so fragments a few voxels apart count
   once. The lesion itself is not dilated.
2. Matching: each reference lesion alone is dilated the same way; every 26-connected predicted component
   with a voxel inside that dilated lesion is matched to it (a component may match several lesions).
3. Lesion Dice: Dice of the lesion against the union of its matched predicted components; 0 when none
   matched (a missed lesion, false negative).
4. Small lesions: a lesion whose volume (voxels x voxel volume, mm^3) is <= ``min_volume_mm3`` is left out
   of the score and of the TP/FN counts; the components matched to it are still not false positives.
5. False positives: predicted components matched to no reference lesion (small ones included); each adds
   a Dice of 0.
6. Score = (sum of the Dice of the counted lesions) / (counted lesions + false positives). When both
   counts are 0 (e.g. both masks empty, or only small lesions and no false positive) the score is 1.0
   (the reference turns its 0/0 = nan into 1). Hence: empty reference and empty prediction -> 1;
   empty reference, one predicted component -> 0; one reference lesion, empty prediction -> 0.

Defaults ``dilation=3``, ``min_volume_mm3=50`` are that file's BraTS-GLI (adult glioma) parameters, also
used for BraTS-SSA and BraTS-PED; BraTS-MEN uses dilation 1 and 50 mm^3, BraTS-MET dilation 1 and 2 mm^3.
The lesion-wise HD95 of the same file is not implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MaskMedCore.errors import ConfigError, DataError

LESION_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-neighbourhood, as BraTS's cc3d(connectivity=26)
DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)  # 18-neighbourhood, as BraTS's dilation
BRATS_DILATION_VOXELS = 3
BRATS_MIN_VOLUME_MM3 = 50.0


@dataclass(frozen=True)
class LesionWiseDice:
    """The BraTS 2023 lesion-wise Dice of one case and one class, with its counts.

    Attributes:
        dice: the lesion-wise Dice score in [0, 1].
        lesion_dice: Dice of each counted reference lesion (volume > threshold), in lesion label order.
        n_ref_lesions: counted reference lesions (after merging by dilation, above the volume threshold).
        n_small_ref_lesions: reference lesions left out for being at or below the volume threshold.
        n_pred_lesions: 26-connected components of the prediction.
        tp: counted reference lesions with at least one matched predicted component.
        fn: counted reference lesions with none.
        fp: predicted components matched to no reference lesion.
    """

    dice: float
    lesion_dice: tuple[float, ...]
    n_ref_lesions: int
    n_small_ref_lesions: int
    n_pred_lesions: int
    tp: int
    fn: int
    fp: int


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise DataError(f"{name} must be a 3D (D, H, W) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The lesions of a binary mask: its 26-connected components.

    Args:
        mask: (D, H, W) binary mask of one class.

    Returns:
        ((D, H, W) int32 label map, 0 outside and 1..n for the components in raster order, n).
    """
    labels, n = ndimage.label(_check_mask(mask, "mask"), structure=LESION_CONNECTIVITY, output=np.int32)
    return labels, int(n)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations == 0:  # scipy repeats until nothing changes when iterations < 1
        return mask
    return ndimage.binary_dilation(mask, structure=DILATION_STRUCTURE, iterations=iterations)


def merged_reference_lesions(ref_mask: np.ndarray, dilation: int = BRATS_DILATION_VOXELS) -> tuple[np.ndarray, int]:
    """Reference lesions as BraTS 2023 counts them: components merged when their dilations touch.

    Args:
        ref_mask: (D, H, W) binary reference mask.
        dilation: dilation iterations (voxels) with the 18-neighbourhood.

    Returns:
        ((D, H, W) int32 label map of the undilated reference voxels, 1..n per merged lesion, n). Every
        label 1..n is used: each component of the dilated mask holds at least one reference voxel.
    """
    ref_mask = _check_mask(ref_mask, "ref_mask")
    dilated_labels, n = lesion_components(_dilate(ref_mask, dilation))
    return np.where(ref_mask, dilated_labels, 0).astype(np.int32), n


def _grown_box(box: tuple[slice, ...], margin: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """A bounding box grown by ``margin`` voxels per side (clipped): it holds the lesion's dilation."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def lesion_wise_dice(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    dilation: int = BRATS_DILATION_VOXELS,
    min_volume_mm3: float = BRATS_MIN_VOLUME_MM3,
) -> LesionWiseDice:
    """BraTS 2023 lesion-wise Dice of one class (definition: module docstring).

    Args:
        pred_mask: (D, H, W) binary prediction of the class.
        ref_mask: (D, H, W) binary reference of the class, same shape.
        spacing: voxel spacing (D, H, W) in mm, for lesion volumes.
        dilation: dilation iterations in voxels (merging reference lesions and matching predictions).
        min_volume_mm3: reference lesions with volume <= this are not scored.

    Returns:
        A ``LesionWiseDice`` with plain Python numbers.

    Raises:
        DataError: the masks are not 3D or their shapes differ.
        ConfigError: bad ``dilation``, ``min_volume_mm3`` or ``spacing``.
    """
    pred_mask = _check_mask(pred_mask, "pred_mask")
    ref_mask = _check_mask(ref_mask, "ref_mask")
    if pred_mask.shape != ref_mask.shape:
        raise DataError(f"pred_mask {pred_mask.shape} and ref_mask {ref_mask.shape} must have the same shape")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 0:
        raise ConfigError(f"dilation must be an integer number of voxels >= 0, got {dilation!r}")
    if not (isinstance(min_volume_mm3, (int, float)) and math.isfinite(min_volume_mm3) and min_volume_mm3 >= 0):
        raise ConfigError(f"min_volume_mm3 must be a finite number >= 0, got {min_volume_mm3!r}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"spacing must be three positive numbers (D, H, W) in mm, got {tuple(spacing)!r}")
    voxel_mm3 = float(np.prod(spacing))

    ref_lesions, n_ref = merged_reference_lesions(ref_mask, int(dilation))
    pred_labels, n_pred = lesion_components(pred_mask)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    matched_anywhere = np.zeros(n_pred + 1, dtype=bool)
    lesion_dice: list[float] = []
    n_small = tp = 0
    for label, box in enumerate(ndimage.find_objects(ref_lesions), start=1):
        box = _grown_box(box, int(dilation), ref_lesions.shape)
        lesion = ref_lesions[box] == label
        pred_crop = pred_labels[box]
        matched = np.unique(pred_crop[_dilate(lesion, int(dilation))])
        matched = matched[matched != 0]
        matched_anywhere[matched] = True
        n_lesion = int(np.count_nonzero(lesion))
        if n_lesion * voxel_mm3 <= min_volume_mm3:
            n_small += 1
            continue
        # Every predicted component overlapping the lesion lies in its dilation, so it is matched.
        overlap = int(np.count_nonzero(pred_crop[lesion]))
        lesion_dice.append(2.0 * overlap / (n_lesion + int(pred_sizes[matched].sum())))
        tp += int(matched.size > 0)
    fp = int(np.count_nonzero(~matched_anywhere[1:]))
    denominator = len(lesion_dice) + fp
    score = float(sum(lesion_dice) / denominator) if denominator else 1.0
    return LesionWiseDice(
        dice=score,
        lesion_dice=tuple(lesion_dice),
        n_ref_lesions=len(lesion_dice),
        n_small_ref_lesions=n_small,
        n_pred_lesions=n_pred,
        tp=tp,
        fn=len(lesion_dice) - tp,
        fp=fp,
    )
