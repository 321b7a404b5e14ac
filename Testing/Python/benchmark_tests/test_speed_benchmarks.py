"""Issue 14's speed benchmarks: the fast-setting Dice bookkeeping and the whole-scan CT input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

BENCH_DIR = Path(__file__).resolve().parents[2] / "Benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_fast_setting  # noqa: E402
import whole_scan_ct  # noqa: E402


def test_fast_setting_dice_is_averaged_per_class_then_over_classes(tmp_path):
    pred = {"c1_0000.nii.gz": np.array([[[1, 1, 2, 0]]]), "c2_0000.nii.gz": np.array([[[1, 2, 0, 0]]])}
    refs = {"c1.nii.gz": np.array([[[1, 2, 2, 0]]]), "c2.nii.gz": np.array([[[1, 2, 0, 0]]])}
    np.savez(tmp_path / "pred.npz", **pred)
    for name, ref in refs.items():
        sitk.WriteImage(sitk.GetImageFromArray(ref.astype(np.uint8)), str(tmp_path / name))
    dice = bench_fast_setting.mean_dice(str(tmp_path / "pred.npz"), tmp_path, [1, 2])
    # Case 1: class 1 2*1/(2+1), class 2 2*1/(1+2); case 2 perfect.
    assert dice["per_class"] == pytest.approx({1: (2 / 3 + 1) / 2, 2: (2 / 3 + 1) / 2})
    assert dice["mean"] == pytest.approx(5 / 6) and dice["cases"] == 2


def test_whole_scan_ct_is_resampled_then_padded_with_air(shared_data, monkeypatch):
    monkeypatch.setenv("MASKMED_SHARED_DATA", str(shared_data))
    if not (shared_data / f"{whole_scan_ct.SOURCE}_image.nii.gz").is_file():
        pytest.skip("the TotalSegmentator example CT is not in the shared data")
    # 3 mm source (122 x 101 x 112 voxels, x y z) at 6 x 3 x 3 mm: 56 x 101 x 122 (z y x), padded to 60 x 128 x 128.
    image, labels = whole_scan_ct.whole_scan_ct((60, 128, 128), (6.0, 3.0, 3.0))
    assert image.shape == labels.shape == (60, 128, 128)
    assert image.dtype == np.int16 and labels.dtype == np.uint8
    assert (image[:, :13] == whole_scan_ct.AIR_HU).all() and (labels[:, :13] == 0).all()  # (128 - 101) // 2 rows
    assert (image[:2] == whole_scan_ct.AIR_HU).all()  # (60 - 56) // 2 slices
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / f"{whole_scan_ct.SOURCE}_image.nii.gz")))
    # Same origin, 3 mm in-plane and 6 mm in z: every output voxel centre is a source voxel centre (every other slice).
    np.testing.assert_array_equal(image[2:58, 13:114, 3:125], source[::2])
    assert labels.max() > 0
