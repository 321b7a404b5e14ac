"""nnU-Net's preprocessing/export steps as reproduced in ``MaskMedCore.nnunet.preprocessing``, checked against
the libraries nnU-Net calls (SciPy always; scikit-image and nnunetv2 where installed) and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from MaskMedCore.nnunet.predictor import nnunet_gaussian
from MaskMedCore.nnunet.preprocessing import (
    NnUNetPreprocessing,
    _resample_axis0,
    export_labels,
    normalize,
    preprocess,
    resample_to_shape,
    resize_like_skimage,
    separate_axis,
)


def _prep(transpose=(0, 1, 2), spacing=(1.0, 1.0, 1.0), scheme="ZScoreNormalization", mask=False, stats=None):
    back = tuple(int(np.argsort(transpose)[i]) for i in range(3))
    kwargs = {"order": 3, "order_z": 0, "force_separate_z": None}
    return NnUNetPreprocessing(
        transpose, back, spacing, (scheme,), (mask,), (stats or {},), kwargs, {**kwargs, "order": 1}
    )


@pytest.mark.parametrize("old, new", [(7, 19), (19, 7), (5, 5 * 3), (12, 5)])
def test_separate_axis_step_is_scipys_map_coordinates(old, new):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(old, 3, 4))
    coords = np.mgrid[:new, :3, :4].astype(np.float64)
    coords[0] = (old / new) * (coords[0] + 0.5) - 0.5
    for order in (0, 1):
        expected = ndimage.map_coordinates(x, coords, order=order, mode="nearest")
        np.testing.assert_allclose(_resample_axis0(x, new, order), expected, atol=1e-12)


def test_resize_matches_scikit_image():
    transform = pytest.importorskip("skimage.transform", reason="scikit-image is not installed (nnunetv2 brings it)")
    x = np.random.default_rng(1).normal(size=(9, 13, 7))
    for shape, order in (((20, 11, 14), 3), ((5, 30, 7), 1), ((9, 6, 3), 3)):
        expected = transform.resize(x, shape, order, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(resize_like_skimage(x, shape, order), expected, atol=1e-12)


def test_separate_axis_rules():
    assert separate_axis((5.0, 1.0, 1.0), (3.0, 1.0, 1.0), None) == 0  # current spacing anisotropic
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), None) == 2  # else the new one is asked
    assert separate_axis((1.0, 1.0, 1.0), (2.0, 1.0, 1.0), None) is None
    assert separate_axis((0.5, 2.0, 2.0), (1.0, 1.0, 1.0), None) is None  # two coarse axes: no separate z
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), True) is None  # forced, but every axis is "low-res"
    assert separate_axis((1.0, 2.0, 1.0), (1.0, 1.0, 1.0), True) == 1


def test_ct_and_zscore_normalisation_by_hand():
    x = np.array([-2000.0, 0.0, 50.0, 5000.0], dtype=np.float32)
    stats = {"percentile_00_5": -100.0, "percentile_99_5": 300.0, "mean": 50.0, "std": 100.0}
    np.testing.assert_allclose(normalize(x.copy(), "CTNormalization", None, stats), [-1.5, -0.5, 0.0, 2.5])
    y = np.array([0.0, 0.0, 2.0, 4.0], dtype=np.float32)
    mask = y > 0
    np.testing.assert_allclose(normalize(y.copy(), "ZScoreNormalization", mask, {}), [0, 0, -1, 1])
    np.testing.assert_allclose(
        normalize(np.array([1.0, 3.0], np.float32), "RescaleTo01Normalization", None, {}), [0, 1]
    )


def test_preprocess_then_export_returns_the_labels_in_the_input_orientation():
    """A label map turned into one-hot "logits" at the network grid comes back exactly (transpose, crop,
    resampling there and back with separate z)."""
    rng = np.random.default_rng(2)
    labels = np.zeros((30, 20, 12), dtype=np.uint8)  # (z, y, x); x is the 5 mm axis
    labels[5:25, 4:16, 2:10] = 1
    labels[10:20, 8:12, 4:8] = 2
    image = rng.normal(100, 10, size=labels.shape).astype(np.float32) * (labels > 0) + 0.0
    image[2:28, 2:18, 1:11] += 1.0  # non-zero region larger than the labels, smaller than the image
    itk = sitk.GetImageFromArray(image)
    itk.SetSpacing((5.0, 1.0, 1.0))  # (x, y, z)
    prep = _prep(transpose=(2, 0, 1), spacing=(2.5, 1.0, 1.0))
    data, props = preprocess([itk], prep)
    assert props["bbox"] == [[1, 11], [2, 28], [2, 18]]  # transposed (x, z, y) order
    assert data.shape == (1, 20, 26, 16)  # x: 10 voxels at 5 mm -> 20 at 2.5 mm
    cropped = labels[2:28, 2:18, 1:11].transpose(2, 0, 1)  # (x, z, y)
    onehot = np.stack([cropped == k for k in range(3)]).astype(np.float32)
    up = resample_to_shape(onehot, (20, 26, 16), (5.0, 1.0, 1.0), (2.5, 1.0, 1.0), order=1)
    restored = export_labels(torch.from_numpy(up), props, prep)
    assert restored.shape == labels.shape
    np.testing.assert_array_equal(restored, labels)


def test_gaussian_is_nnunets():
    sliding = pytest.importorskip("nnunetv2.inference.sliding_window_prediction", reason="nnunetv2 is not installed")
    for patch in ((40, 56, 40), (16, 48, 48), (7, 9, 11)):
        theirs = sliding.compute_gaussian(patch, 1 / 8, 10, device=torch.device("cpu")).float()
        assert torch.equal(nnunet_gaussian(patch), theirs)
