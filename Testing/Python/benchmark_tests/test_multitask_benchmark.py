"""Issue 12's multi-task benchmark: the lesion-only copy (detection-only row) and each row's setup."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

BENCH_DIR = Path(__file__).resolve().parents[2] / "Benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_multitask  # noqa: E402

from MaskMedCore.data.dataset import load_dataset  # noqa: E402
from MaskMedCore.data.phantom import write_phantom_dataset  # noqa: E402


def test_lesion_only_copy_keeps_the_images_and_only_the_lesions(tmp_path):
    source = write_phantom_dataset(tmp_path / "src", 2, seed=1, shape=(24, 48, 48), spacing=(4, 3, 3), max_lesions=3)
    target = bench_multitask.lesion_only_copy(source, tmp_path / "lesions")
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "lesion": 1} and "case_labels" not in meta
    dataset = load_dataset(target)
    assert dataset.multitask.instance_classes == ("lesion",) and not dataset.multitask.case_tasks
    for case in ("phantom_000", "phantom_001"):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / f"{case}.nii.gz")))
        out = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / f"{case}.nii.gz")))
        np.testing.assert_array_equal(out, (ref == 6).astype(np.uint8))
        image = target / "imagesTr" / f"{case}_0000.nii.gz"
        assert image.resolve() == (source / "imagesTr" / f"{case}_0000.nii.gz").resolve()
    # reused, not rewritten, when present
    stamp = (target / "dataset.json").stat().st_mtime_ns
    bench_multitask.lesion_only_copy(source, target)
    assert (target / "dataset.json").stat().st_mtime_ns == stamp


def test_rows_differ_only_in_outputs_and_losses(tmp_path):
    datasets = {k: tmp_path / k for k in ("train", "test", "train_lesions_only", "test_lesions_only")}
    multi = bench_multitask.row_setup("multi_task", datasets)
    seg = bench_multitask.row_setup("segmentation_only", datasets)
    det = bench_multitask.row_setup("detection_only", datasets)
    cls = bench_multitask.row_setup("classification_only", datasets)
    assert multi[2] == {"box_head": True} and seg[2] == {"instance_classes": [], "case_tasks": []}
    assert det[0] == datasets["train_lesions_only"] and det[2] == {"box_head": True}
    assert (cls[3].class_weight, cls[3].bce_weight, cls[3].dice_weight, cls[3].case_weight) == (0, 0, 0, 1)
    assert multi[3] == seg[3] == det[3]  # the same set + semantic loss for the three segmenting rows
