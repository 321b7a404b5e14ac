"""Dice, HD95 and NSD: hand-made cases with known answers, empty cases, EDT vs k-d tree."""

import math

import numpy as np
import pytest
from scipy import ndimage

from MaskMedCore.metrics import (
    dice_per_class,
    dice_score,
    hausdorff_distance_95,
    normalized_surface_dice,
    surface_distances,
    surface_metrics,
    surface_voxels,
)

SPACING = (3.0, 0.5, 0.5)  # (D, H, W) mm, strongly anisotropic


def two_cubes():
    """10^3 cubes, the prediction shifted by 2 voxels (6 mm) along D.

    Every top-face voxel of the prediction is exactly 6 mm from the reference surface, and so is
    every bottom-face voxel of the reference from the prediction surface; these 100 of 488 surface
    voxels (20%) are the largest distances, so HD95 = HD = 6 mm. Within 2 mm: the 8 side rings that
    coincide (8 * 36) plus the 64 interior voxels of the inner face (at most 4 * 0.5 mm from a side
    face) = 352 of 488 in each direction.
    """
    ref = np.zeros((24, 20, 20), dtype=bool)
    pred = np.zeros_like(ref)
    ref[5:15, 5:15, 5:15] = True
    pred[7:17, 5:15, 5:15] = True
    return pred, ref


def test_two_cubes_offset_along_the_coarse_axis():
    pred, ref = two_cubes()
    assert surface_voxels(ref).sum() == 10**3 - 8**3
    assert dice_score(pred, ref) == pytest.approx(0.8)
    m = surface_metrics(pred, ref, SPACING, tolerance_mm=2.0)
    assert m.hd95 == pytest.approx(6.0)
    assert m.nsd == pytest.approx(352 / 488)
    assert surface_metrics(pred, ref, SPACING, percentile=100).hd95 == pytest.approx(6.0)
    # A tolerance at the largest distance accepts every surface voxel.
    assert normalized_surface_dice(pred, ref, SPACING, tolerance_mm=6.0) == 1.0
    # Transposed, the shift runs along W: 6 mm with 3 mm voxels there, 1 mm with 0.5 mm voxels.
    assert hausdorff_distance_95(pred.transpose(2, 1, 0), ref.transpose(2, 1, 0), SPACING[::-1]) == pytest.approx(6.0)
    assert hausdorff_distance_95(pred.transpose(2, 1, 0), ref.transpose(2, 1, 0), (0.5, 0.5, 0.5)) == pytest.approx(1.0)


def test_single_voxels_are_exactly_their_distance_apart():
    ref = np.zeros((8, 8, 8), dtype=bool)
    pred = np.zeros_like(ref)
    ref[2, 3, 3] = True
    pred[5, 3, 7] = True  # 3 voxels * 3 mm along D, 4 voxels * 0.5 mm along W
    expected = math.hypot(9.0, 2.0)
    assert hausdorff_distance_95(pred, ref, SPACING) == pytest.approx(expected)
    assert normalized_surface_dice(pred, ref, SPACING, tolerance_mm=expected - 1e-4) == 0.0
    assert normalized_surface_dice(pred, ref, SPACING, tolerance_mm=expected) == 1.0


def test_tolerance_equal_to_a_distance_counts_despite_rounding():
    ref = np.zeros((1, 1, 8), dtype=bool)
    pred = np.zeros_like(ref)
    ref[0, 0, 0] = True
    pred[0, 0, 3] = True  # 3 * 1.1 mm = 3.3000000000000003 in float64
    assert normalized_surface_dice(pred, ref, (1.0, 1.0, 1.1), tolerance_mm=3.3) == 1.0


def test_identical_masks():
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.standard_normal((20, 24, 22)), 2.0) > 0.05
    assert mask.any()
    assert dice_score(mask, mask) == 1.0
    assert surface_metrics(mask, mask, (1.2, 0.7, 0.7)) == (0.0, 1.0)


@pytest.mark.parametrize(
    "pred_any, ref_any, expected",
    [
        (False, False, (1.0, 0.0, 1.0)),  # nothing to find, nothing found: perfect
        (True, False, (0.0, math.nan, 0.0)),  # false positive only: HD95 undefined
        (False, True, (0.0, math.nan, 0.0)),  # missed entirely: HD95 undefined
    ],
)
def test_empty_cases(pred_any, ref_any, expected):
    pred = np.zeros((6, 6, 6), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2:4, 2:4, 2:4] = pred_any
    ref[1:3, 1:3, 1:3] = ref_any
    m = surface_metrics(pred, ref, (1.0, 1.0, 1.0))
    got = (dice_score(pred, ref), m.hd95, m.nsd)
    for g, e in zip(got, expected):
        assert isinstance(g, float)
        assert (math.isnan(g) and math.isnan(e)) or g == e


def test_dice_per_class_on_label_maps():
    ref = np.zeros((4, 4, 4), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :2] = 1
    pred[0, :1] = 1  # 4 of the 8 voxels of class 1
    ref[3] = 2
    pred[3] = 2
    assert dice_per_class(pred, ref, [1, 2, 3]) == {1: pytest.approx(2 * 4 / 12), 2: 1.0, 3: 1.0}


def test_mask_touching_the_border_has_a_surface_there():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[:, :, :2] = True
    surface = surface_voxels(mask)
    assert surface[2, 2, 0] and surface[2, 2, 1] and not surface[2, 2, 2]


def test_edt_reference_matches_kdtree():
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((30, 34, 28)), 2.0)
    ref = noise > 0.05
    pred = ndimage.gaussian_filter(noise + 0.1 * rng.standard_normal(noise.shape), 1.0) > 0.08
    pred[0, 0, 0] = True  # a stray voxel far from the rest stretches the bounding box
    spacing = (2.0, 0.9, 0.8)
    fast = surface_distances(pred, ref, spacing, method="kdtree")
    slow = surface_distances(pred, ref, spacing, method="edt")
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert surface_metrics(pred, ref, spacing, method="edt") == pytest.approx(surface_metrics(pred, ref, spacing))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"tolerance_mm": -1.0}, "tolerance_mm"),
        ({"percentile": 101}, "percentile"),
        ({"method": "brute"}, "method"),
    ],
)
def test_bad_arguments(kwargs, match):
    mask = np.ones((3, 3, 3), dtype=bool)
    args = {"spacing": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        surface_metrics(mask, mask, **args)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        dice_score(np.ones((2, 2, 2), bool), np.ones((2, 2, 3), bool))
