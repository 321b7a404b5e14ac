"""preprocess_case and its inverse: crop, normalise, resample, and back to the original geometry."""

import json

import numpy as np
import pytest
import torch
from raw_dataset_builders import OBLIQUE, dice

from MaskMedCore.config.plan_config import ChannelNormalization, PlanConfig
from MaskMedCore.data.image_io import geometry_of, image_from_array
from MaskMedCore.data.preprocessing import (
    PROPERTY_KEYS,
    array_to_image,
    normalize_channel,
    preprocess_case,
    resample,
    restore_labels,
    restore_map,
    separate_z_axis,
)
from MaskMedCore.errors import DataError

ORIGIN = (-12.5, 40.0, 7.25)


def _plan(target_spacing, channels=("MR", "PET"), schemes=("zscore", "zscore"), num_classes=3, crop=True):
    return PlanConfig(
        dataset_name="t",
        channel_names=channels,
        labels={"background": 0, **{f"c{k}": k for k in range(1, num_classes)}},
        file_ending=".nii.gz",
        normalization=[ChannelNormalization(s) for s in schemes],
        target_spacing=target_spacing,
        patch_size=(8, 8, 8),
        batch_size=2,
        features_per_stage=(32, 64),
        kernel_sizes=((3, 3, 3), (3, 3, 3)),
        strides=((1, 1, 1), (2, 2, 2)),
        median_shape=(8, 8, 8),
        crop_to_nonzero=crop,
    )


def _case(shape, spacing, direction=None, seed=0):
    """Two channels that are zero outside a body box, and two large ellipsoids as labels 1 and 2."""
    rng = np.random.default_rng(seed)
    D, H, W = shape
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    labels = np.zeros(shape, np.uint8)
    labels[((z - 0.1) / 0.5) ** 2 + ((y + 0.2) / 0.35) ** 2 + ((x + 0.25) / 0.3) ** 2 <= 1] = 1
    labels[((z + 0.1) / 0.45) ** 2 + ((y - 0.25) / 0.3) ** 2 + ((x - 0.3) / 0.3) ** 2 <= 1] = 2
    body = np.zeros(shape, bool)
    body[1 : D - 1, 2 : H - 3, 3 : W - 2] = True
    labels[~body] = 0
    arrays = []
    for c in range(2):
        a = (rng.normal(50.0 + 20 * c, 5.0, shape) + 30.0 * labels).astype(np.float32)
        a[~body] = 0
        arrays.append(a)
    direction = direction or (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    images = [image_from_array(a, spacing, ORIGIN, direction) for a in arrays]
    return images, image_from_array(labels, spacing, ORIGIN, direction), labels, body


def _one_hot(seg, K):
    return np.stack([(seg == k).astype(np.float32) for k in range(K)])


def test_round_trip_without_resampling_is_exact():
    spacing = (2.0, 1.0, 1.0)
    images, label, labels, body = _case((12, 20, 22), spacing)
    data, seg, props = preprocess_case(images, label, _plan(spacing))
    assert set(props) == set(PROPERTY_KEYS) and json.loads(json.dumps(props)) == props
    assert props["crop_bbox"] == [[1, 11], [2, 17], [3, 20]]
    assert data.shape == (2, 10, 15, 17) and data.dtype == np.float32
    assert seg.dtype == np.int16 and props["shape_after_resampling"] == props["shape_after_crop"] == [10, 15, 17]
    np.testing.assert_array_equal(seg, labels[1:11, 2:17, 3:20])
    restored = restore_labels(_one_hot(seg, 3), props)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, labels)
    image = array_to_image(restored, props)
    assert geometry_of(image) == geometry_of(images[0])


def test_round_trip_with_anisotropic_resampling_and_oblique_direction():
    spacing = (3.0, 0.8, 0.8)  # thick slices: z is resampled separately (nearest)
    images, label, labels, _ = _case((14, 64, 64), spacing, direction=OBLIQUE)
    plan = _plan((1.5, 1.2, 1.2))
    data, seg, props = preprocess_case(images, label, plan)
    assert props["shape_after_crop"] == [12, 59, 59]
    assert props["shape_after_resampling"] == [24, 39, 39] == list(data.shape[1:]) == list(seg.shape)
    assert sorted(np.unique(seg)) == [0, 1, 2]  # nearest neighbour keeps label values exactly
    restored = restore_labels(torch.from_numpy(_one_hot(seg, 3)), props)  # torch input accepted
    for k in (1, 2):
        assert dice(restored == k, labels == k) > 0.95
    image = array_to_image(restored, props)
    original = geometry_of(images[0])
    assert geometry_of(image) == original
    assert original.direction == pytest.approx(OBLIQUE) and original.spacing == pytest.approx(spacing)


def test_zscore_over_the_nonzero_region_and_background_kept_zero():
    images, label, _, body = _case((10, 16, 18), (1.0, 1.0, 1.0))
    data, _, props = preprocess_case(images, label, _plan((1.0, 1.0, 1.0)))
    box = tuple(slice(a, b) for a, b in props["crop_bbox"])
    inside = body[box]
    for c in range(2):
        assert data[c][inside].mean() == pytest.approx(0.0, abs=1e-4)
        assert data[c][inside].std() == pytest.approx(1.0, abs=1e-3)
        assert np.all(data[c][~inside] == 0)


def test_without_cropping_zscore_uses_the_whole_image():
    images, label, _, _ = _case((10, 16, 18), (1.0, 1.0, 1.0))
    data, _, props = preprocess_case(images, label, _plan((1.0, 1.0, 1.0), crop=False))
    assert props["crop_bbox"] == [[0, 10], [0, 16], [0, 18]] and data.shape == (2, 10, 16, 18)
    assert data[0].mean() == pytest.approx(0.0, abs=1e-4) and data[0].std() == pytest.approx(1.0, abs=1e-3)


def test_ct_and_none_normalisation():
    x = np.array([[[-2000.0, 0.0, 100.0, 5000.0]]], np.float32)
    ct = normalize_channel(x, ChannelNormalization("ct", mean=100.0, std=50.0, lower=-1000.0, upper=1000.0), None)
    np.testing.assert_allclose(ct, [[[-22.0, -2.0, 0.0, 18.0]]])
    assert ct.dtype == np.float32
    assert normalize_channel(x, ChannelNormalization("none"), None) is x


def test_separate_z_rule():
    assert separate_z_axis((3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == 0
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 1.0, 5.0)) == 2  # the target decides when the data is isotropic
    assert separate_z_axis((1.0, 1.0, 1.0), (2.0, 1.0, 1.0)) is None
    assert separate_z_axis((4.0, 4.0, 1.0), (1.0, 1.0, 1.0)) is None  # two coarse axes tie


def test_separate_axis_resampling_uses_nearest_along_that_axis():
    x = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 6, 6), np.float32)
    up = resample(x, (8, 9, 9), order=3, separate_axis=0)
    np.testing.assert_allclose(up[:, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3], atol=1e-5)
    assert resample(x, (4, 6, 6), order=3, separate_axis=None) is x


def test_restore_map_fills_outside_the_crop():
    images, label, _, body = _case((12, 20, 22), (2.0, 1.0, 1.0))
    _, seg, props = preprocess_case(images, label, _plan((2.0, 1.0, 1.0)))
    out = restore_map(np.full(seg.shape, 0.25, np.float32), props, fill=-1.0)
    assert out.shape == (12, 20, 22) and out.dtype == np.float32
    box = tuple(slice(a, b) for a, b in props["crop_bbox"])
    assert np.all(out[box] == 0.25) and (out == -1.0).sum() == out.size - seg.size


def test_inference_without_label_and_bad_inputs():
    images, label, _, _ = _case((10, 16, 18), (1.0, 1.0, 1.0))
    plan = _plan((1.0, 1.0, 1.0))
    data, seg, props = preprocess_case(images, None, plan)
    assert seg is None and data.shape[0] == 2
    with pytest.raises(DataError, match=r"expected 2 image\(s\) for channels \['MR', 'PET'\], got 1"):
        preprocess_case(images[:1], None, plan)
    other = image_from_array(np.zeros((10, 16, 17), np.float32), (1.0, 1.0, 1.0), ORIGIN, OBLIQUE)
    with pytest.raises(DataError, match="the label map has size"):
        preprocess_case(images, other, plan)
    with pytest.raises(DataError, match="expected the preprocessed"):
        restore_labels(np.zeros((3, 2, 2, 2), np.float32), props)
    with pytest.raises(DataError, match="expected the original"):
        array_to_image(np.zeros((2, 2, 2), np.uint8), props)
