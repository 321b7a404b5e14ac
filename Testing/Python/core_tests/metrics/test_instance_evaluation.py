"""maskmed evaluate on a prediction folder with instance outputs: scored instances, boxes, case predictions.

Every expected number is worked out by hand in the comments.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.errors import DataError
from MaskMedCore.metrics.evaluate import evaluate_folders
from MaskMedCore.metrics.instance_outputs import box_iou

SHAPE = (8, 16, 16)
L1 = np.s_[1:3, 2:5, 2:5]  # 2 x 3 x 3 = 18 voxels, box (d, h, w) [1, 2, 2] .. [2, 4, 4]
L2 = np.s_[5:7, 10:14, 10:14]  # 2 x 4 x 4 = 32 voxels, box [5, 10, 10] .. [6, 13, 13]
FP = np.s_[1:2, 12:14, 1:3]  # 1 x 2 x 2 = 4 voxels, no reference lesion
TASKS = (("lesion_count", ("none", "one", "several")), ("lesion_present", ("no", "yes")))


def _write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))


def _box(source: str, instance: int, lo_dhw, hi_dhw) -> dict:
    return {
        "instance": instance,
        "source": source,
        "index_min": list(lo_dhw)[::-1],  # written in SimpleITK (x, y, z) order
        "index_max": list(hi_dhw)[::-1],
        "center_lps": [0.0, 0.0, 0.0],
        "size_mm": [1.0, 1.0, 1.0],
    }


@pytest.fixture()
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    # case a: two reference lesions; the model finds both plus one false positive
    labels = np.zeros(SHAPE, np.uint8)
    labels[L1] = labels[L2] = 1
    _write(labels, ref / "a.nii.gz")
    predicted = labels.copy()
    predicted[FP] = 1
    _write(predicted, pred / "a.nii.gz")
    instances = np.zeros(SHAPE, np.uint16)
    instances[L2], instances[FP], instances[L1] = 1, 2, 3
    _write(instances, pred / "a_instances.nii.gz")
    summary_a = {
        "instances": [
            {"id": 1, "class_name": "lesion", "label_value": 1, "score": 0.9},
            {"id": 2, "class_name": "lesion", "label_value": 1, "score": 0.8},
            {"id": 3, "class_name": "lesion", "label_value": 1, "score": 0.3},
        ],
        "boxes": [
            _box("mask", 1, (5, 10, 10), (6, 13, 13)),
            _box("head", 1, (5, 10, 11), (6, 13, 14)),  # one voxel off in w: IoU 24 / 40 = 0.6
            _box("mask", 2, (1, 12, 1), (1, 13, 2)),
            _box("mask", 3, (1, 2, 2), (2, 4, 4)),
        ],
        "case_classification": {
            "lesion_count": {"predicted": "several", "probabilities": {"none": 0.1, "one": 0.2, "several": 0.7}},
            "lesion_present": {"predicted": "yes", "probabilities": {"no": 0.2, "yes": 0.8}},
        },
    }
    (pred / "a_summary.json").write_text(json.dumps(summary_a))
    # case b: nothing in the reference, nothing predicted
    empty = np.zeros(SHAPE, np.uint8)
    _write(empty, ref / "b.nii.gz")
    _write(empty, pred / "b.nii.gz")
    _write(empty.astype(np.uint16), pred / "b_instances.nii.gz")
    summary_b = {
        "instances": [],
        "boxes": [],
        "case_classification": {
            "lesion_count": {"predicted": "one", "probabilities": {"none": 0.3, "one": 0.6, "several": 0.1}},
            "lesion_present": {"predicted": "yes", "probabilities": {"no": 0.6, "yes": 0.4}},
        },
    }
    (pred / "b_summary.json").write_text(json.dumps(summary_b))
    truth = {"a": {"lesion_count": "several", "lesion_present": "yes"}, "b": {"lesion_count": "none"}}
    return pred, ref, truth


def test_scored_instances_change_ap_and_instance_maps_are_not_cases(folders):
    pred, ref, _ = folders
    result = evaluate_folders(pred, ref, {"lesion": 1}, lesion_classes=["lesion"])
    assert result["n_cases"] == 2  # a_instances / b_instances are read with their cases, not scored as cases
    lesion = result["lesions"]["classes"]["lesion"]
    assert (lesion["ref_lesions"], lesion["pred_lesions"]) == (2, 3)
    # ranked 0.9 TP, 0.8 FP, 0.3 TP: points (r 1/2, p 1), (1/2, 1/2), (1, 2/3); all-point AP = 1/2 + 1/2 * 2/3
    assert lesion["detection"]["0.5"]["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # FROC: at 0.5 FP per case (1 FP over 2 cases) the lowest threshold keeps all three: sensitivity 1
    assert lesion["froc"]["0.5"] == pytest.approx(1.0)
    # without the instance outputs every component scores 1.0: AP = precision x recall = 2/3
    for name in ("a_instances.nii.gz", "a_summary.json", "b_instances.nii.gz", "b_summary.json"):
        (pred / name).unlink()
    plain = evaluate_folders(pred, ref, {"lesion": 1}, lesion_classes=["lesion"])
    assert plain["lesions"]["classes"]["lesion"]["detection"]["0.5"]["ap"] == pytest.approx(2 / 3)
    assert "boxes" not in plain["lesions"]["classes"]["lesion"]


def test_box_ious_of_mask_and_head_boxes(folders):
    pred, ref, _ = folders
    boxes = evaluate_folders(pred, ref, {"lesion": 1}, lesion_classes=["lesion"])["lesions"]["classes"]["lesion"][
        "boxes"
    ]
    # both reference lesions matched; their mask boxes are exact; only lesion 2's instance has a head box
    assert boxes["mask_all"] == pytest.approx(1.0) and boxes["n_mask_all"] == 2
    assert boxes["head_all"] == pytest.approx(0.6) and boxes["n_head_all"] == 1
    # the smaller half: volumes 18 and 32 mm^3, median 25: lesion 1 (exact mask box, no head box)
    assert boxes["small_lesion_mm3"] == 25.0
    assert boxes["n_mask_small"] == 1 and boxes["mask_small"] == pytest.approx(1.0)
    assert boxes["n_head_small"] == 0 and math.isnan(boxes["head_small"])


def test_box_iou_by_hand():
    a = (np.array([0, 0, 0]), np.array([1, 1, 1]))  # 8 voxels
    b = (np.array([1, 1, 1]), np.array([2, 2, 2]))  # 8 voxels, 1 shared
    assert box_iou(a, b) == pytest.approx(1 / 15)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, (np.array([5, 5, 5]), np.array([6, 6, 6]))) == 0.0


def test_case_classification_accuracy_and_auc(folders):
    pred, ref, truth = folders
    result = evaluate_folders(pred, ref, {"lesion": 1}, case_labels=(TASKS, truth))
    count = result["case_classification"]["lesion_count"]
    assert count["accuracy"] == pytest.approx(0.5)  # a right (several), b wrong (one vs none)
    assert math.isnan(count["roc_auc"]) and "one" in count["auc_note"]  # no case is "one": AUC undefined
    present = result["case_classification"]["lesion_present"]
    assert present["n_labelled"] == 1 and present["accuracy"] == 1.0  # b has no lesion_present label
    assert math.isnan(present["roc_auc"])  # one labelled case: no negative


def test_malformed_summary_is_one_clear_error(folders):
    pred, ref, _ = folders
    (pred / "a_summary.json").write_text(json.dumps({"instances": [{"score": 0.5}]}))
    with pytest.raises(DataError, match="a_summary.json"):
        evaluate_folders(pred, ref, {"lesion": 1}, lesion_classes=["lesion"])


def test_unknown_predicted_class_names_the_case(folders):
    pred, ref, truth = folders
    summary = json.loads((pred / "b_summary.json").read_text())
    summary["case_classification"]["lesion_count"]["predicted"] = "many"
    (pred / "b_summary.json").write_text(json.dumps(summary))
    with pytest.raises(DataError, match="case b.*lesion_count"):
        evaluate_folders(pred, ref, {"lesion": 1}, case_labels=(TASKS, truth))
