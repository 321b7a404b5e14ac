"""Lesion components and the BraTS 2023 lesion-wise Dice, against hand-computed small cases."""

import numpy as np
import pytest
from scipy import ndimage

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.metrics.lesions import (
    BRATS_DILATION_VOXELS,
    BRATS_MIN_VOLUME_MM3,
    lesion_components,
    lesion_wise_dice,
    merged_reference_lesions,
)

SHAPE = (12, 12, 30)  # (D, H, W)


def two_lesions_four_components():
    """Reference: two 4^3 cubes (64 voxels) far apart. Prediction, four components:

    a: 4^3 cube shifted by 1 along W over lesion 1 -> overlap 48, Dice 96/128 = 0.75, IoU 48/80 = 0.6.
    b: 2x2x1 plate one voxel before lesion 2 (touches its 1-voxel dilation, overlaps nothing).
    c: 4^3 cube shifted by 2 along W over lesion 2 -> overlap 32, IoU 32/96 = 1/3.
    d: 2^3 cube far from everything: a false positive.
    """
    ref = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    ref[2:6, 2:6, 2:6] = True
    ref[2:6, 2:6, 20:24] = True
    pred[2:6, 2:6, 3:7] = True  # a
    pred[3:5, 3:5, 19:20] = True  # b
    pred[2:6, 2:6, 22:26] = True  # c
    pred[8:10, 8:10, 12:14] = True  # d
    return pred, ref


def test_components_use_26_connectivity():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner neighbours: one lesion
    mask[3, 3, 3] = True  # two voxels away: another
    labels, n = lesion_components(mask)
    assert n == 2 and labels.dtype == np.int32
    assert labels[0, 0, 0] == labels[1, 1, 1] == 1 and labels[3, 3, 3] == 2


@pytest.mark.parametrize(("gap", "dilation", "expected"), [(2, 1, 1), (3, 1, 2), (6, 3, 1), (7, 3, 2), (1, 0, 2)])
def test_reference_fragments_merge_when_their_dilations_touch(gap, dilation, expected):
    ref = np.zeros((6, 6, 20), bool)
    ref[2:4, 2:4, 2:4] = True
    ref[2:4, 2:4, 4 + gap : 6 + gap] = True
    labels, n = merged_reference_lesions(ref, dilation)
    assert n == expected
    assert np.array_equal(labels > 0, ref)  # the lesions themselves are not dilated


def test_two_lesions_three_matches_and_a_far_false_positive():
    pred, ref = two_lesions_four_components()
    result = lesion_wise_dice(pred, ref, dilation=1, min_volume_mm3=0)
    # Lesion 1: a alone, Dice 0.75. Lesion 2: b and c touch its dilation; union 4 + 64 voxels, overlap 32:
    # Dice 64/132. d is the only false positive: (0.75 + 64/132) / (2 + 1) = 163/396.
    assert result.lesion_dice == pytest.approx((0.75, 64 / 132))
    assert result.dice == pytest.approx(163 / 396)
    assert (result.n_ref_lesions, result.n_pred_lesions, result.tp, result.fn, result.fp) == (2, 4, 2, 0, 1)


def test_without_dilation_the_touching_plate_is_a_false_positive():
    pred, ref = two_lesions_four_components()
    result = lesion_wise_dice(pred, ref, dilation=0, min_volume_mm3=0)
    assert result.lesion_dice == pytest.approx((0.75, 0.5))  # lesion 2 against c alone: 64/128
    assert result.fp == 2 and result.dice == pytest.approx(1.25 / 4)


def test_empty_cases():
    empty = np.zeros((8, 8, 8), bool)
    lesion = empty.copy()
    lesion[2:6, 2:6, 2:6] = True
    both_empty = lesion_wise_dice(empty, empty, min_volume_mm3=0)
    assert both_empty.dice == 1.0 and both_empty.fp == both_empty.n_ref_lesions == 0
    only_pred = lesion_wise_dice(lesion, empty, min_volume_mm3=0)
    assert only_pred.dice == 0.0 and (only_pred.fp, only_pred.n_pred_lesions) == (1, 1)
    only_ref = lesion_wise_dice(empty, lesion, min_volume_mm3=0)
    assert only_ref.dice == 0.0 and (only_ref.tp, only_ref.fn, only_ref.fp) == (0, 1, 0)
    assert lesion_wise_dice(lesion, lesion, min_volume_mm3=0).dice == 1.0


def test_small_lesions_are_left_out_but_their_matches_are_not_false_positives():
    ref = np.zeros((10, 10, 20), bool)
    ref[1:5, 1:5, 1:5] = True  # 64 voxels = 128 mm^3
    ref[6:8, 6:8, 14:16] = True  # 8 voxels = 16 mm^3
    spacing = (2.0, 1.0, 1.0)
    pred_both = ref.copy()
    pred_big = ref.copy()
    pred_big[6:8, 6:8, 14:16] = False
    result = lesion_wise_dice(pred_both, ref, spacing, dilation=1, min_volume_mm3=16)  # 16 <= 16: left out
    assert (result.dice, result.n_ref_lesions, result.n_small_ref_lesions, result.fp) == (1.0, 1, 1, 0)
    missed_small = lesion_wise_dice(pred_big, ref, spacing, dilation=1, min_volume_mm3=16)
    assert (missed_small.dice, missed_small.fn) == (1.0, 0)
    counted = lesion_wise_dice(pred_big, ref, spacing, dilation=1, min_volume_mm3=15.9)
    assert (counted.dice, counted.tp, counted.fn) == (0.5, 1, 1)


def test_brats_glioma_defaults():
    assert (BRATS_DILATION_VOXELS, BRATS_MIN_VOLUME_MM3) == (3, 50.0)
    ref = np.zeros((10, 10, 10), bool)
    ref[1:4, 1:4, 1:4] = True  # 27 mm^3 at 1 mm spacing: below 50, not scored
    assert lesion_wise_dice(np.zeros_like(ref), ref).dice == 1.0
    pred = np.zeros_like(ref)
    pred[6, 3, 3] = True  # 3 voxels past the lesion: inside its 3-voxel dilation, so matched, not a false positive
    assert lesion_wise_dice(pred, ref).fp == 0
    pred[7, 3, 3], pred[6, 3, 3] = True, False  # 4 voxels past: a false positive
    assert lesion_wise_dice(pred, ref).fp == 1


def _literal_lesion_wise_dice(pred, ref, dilation, min_voxels):
    """The definition step by step on full volumes, without the bounding-box cropping of the module."""
    structure = ndimage.generate_binary_structure(3, 2)
    ones = np.ones((3, 3, 3), bool)

    def dilate(mask):
        return ndimage.binary_dilation(mask, structure, iterations=dilation) if dilation else mask

    dilated_labels, n_ref = ndimage.label(dilate(ref), ones)
    pred_labels, _ = ndimage.label(pred, ones)
    matched_anywhere, scores = set(), []
    for k in range(1, n_ref + 1):
        lesion = ref & (dilated_labels == k)
        matched = set(np.unique(pred_labels[dilate(lesion)])) - {0}
        matched_anywhere |= matched
        if lesion.sum() <= min_voxels:
            continue
        union = np.isin(pred_labels, list(matched))
        scores.append(2 * np.sum(union & lesion) / (union.sum() + lesion.sum()))
    fp = len(set(np.unique(pred_labels)) - {0} - matched_anywhere)
    return sum(scores) / (len(scores) + fp) if scores or fp else 1.0


def _blobs(rng, level=0.56):
    """Random blobs: 10-40 components in 20^3, a few fragments apart, misses and false positives."""
    return ndimage.gaussian_filter(rng.random((20, 20, 20)), 1.2) > level


@pytest.mark.parametrize("seed", range(4))
def test_cropped_computation_equals_the_literal_definition(seed):
    rng = np.random.default_rng(seed)
    ref = _blobs(rng)
    pred = _blobs(rng) | (np.roll(ref, 1, axis=2) & _blobs(rng, level=0.45))
    for dilation in (0, 1, 3):
        expected = _literal_lesion_wise_dice(pred, ref, dilation, min_voxels=3)
        assert lesion_wise_dice(pred, ref, dilation=dilation, min_volume_mm3=3).dice == pytest.approx(expected)


def test_bad_inputs_name_the_field():
    mask = np.zeros((4, 4, 4), bool)
    with pytest.raises(DataError, match="same shape"):
        lesion_wise_dice(mask, np.zeros((4, 4, 5), bool))
    with pytest.raises(DataError, match=r"pred_mask must be a 3D"):
        lesion_wise_dice(np.zeros((4, 4), bool), mask)
    with pytest.raises(ConfigError, match="dilation"):
        lesion_wise_dice(mask, mask, dilation=-1)
    with pytest.raises(ConfigError, match="min_volume_mm3"):
        lesion_wise_dice(mask, mask, min_volume_mm3=float("nan"))
    with pytest.raises(ConfigError, match="spacing"):
        lesion_wise_dice(mask, mask, spacing=(1.0, 0.0, 1.0))
