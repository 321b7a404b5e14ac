"""``maskmed evaluate --lesion-classes`` and ``evaluate_folders(lesion_classes=...)`` on tiny NIfTI files."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.cli import main
from MaskMedCore.errors import ConfigError
from MaskMedCore.metrics import evaluate_folders
from MaskMedCore.metrics.evaluate import CSV_COLUMNS
from MaskMedCore.metrics.lesion_evaluation import LESION_CSV_COLUMNS, resolve_lesion_classes

SHAPE = (12, 12, 30)  # (D, H, W), 1 mm voxels


def write_label_map(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


@pytest.fixture
def folders(tmp_path):
    """Two cases; class 1 ("tumour") holds the lesions, class 2 ("organ") is a plain class.

    case_1: the two reference cubes and four predicted components of test_lesions (lesion-wise Dice
            163/396 at dilation 1; IoUs 0.6 and 1/3; one plate and one far false positive).
    case_2: one reference cube, nothing predicted.
    """
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    ref1 = np.zeros(SHAPE, np.uint8)
    pred1 = np.zeros(SHAPE, np.uint8)
    ref1[2:6, 2:6, 2:6] = 1
    ref1[2:6, 2:6, 20:24] = 1
    pred1[2:6, 2:6, 3:7] = 1
    pred1[3:5, 3:5, 19:20] = 1
    pred1[2:6, 2:6, 22:26] = 1
    pred1[8:10, 8:10, 12:14] = 1
    ref1[9:11, 1:3, 1:3] = pred1[9:11, 1:3, 1:3] = 2
    ref2 = np.zeros(SHAPE, np.uint8)
    ref2[4:8, 4:8, 10:14] = 1
    write_label_map(pred_dir / "case_1.nii.gz", pred1)
    write_label_map(ref_dir / "case_1.nii.gz", ref1)
    write_label_map(pred_dir / "case_2.nii.gz", np.zeros(SHAPE))
    write_label_map(ref_dir / "case_2.nii.gz", ref2)
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"background": 0, "tumour": 1, "organ": 2}}))
    return pred_dir, ref_dir, dataset


CASE1_DICE = 163 / 396
VOXEL_DICE_1 = 2 * (48 + 32) / (140 + 128)  # predicted 64 + 4 + 64 + 8 voxels, reference 128


def test_command_adds_lesion_metrics(folders, capsys):
    pred_dir, ref_dir, dataset = folders
    argv = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", str(dataset)]
    argv += ["--lesion-classes", "tumour", "--lesion-dilation", "1", "--min-lesion-volume", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((pred_dir / "evaluation.json").read_text())

    case1, case2 = (c["lesions"]["tumour"] for c in result["cases"])
    assert list(result["cases"][0]["lesions"]) == ["tumour"]  # only the lesion classes
    assert (case1["ref_lesions"], case1["pred_lesions"]) == (2, 4)
    assert case1["lesion_dice"] == pytest.approx(CASE1_DICE)
    assert case1["voxel_dice"] == pytest.approx(VOXEL_DICE_1)
    assert case1["lesion_dice_counts"] == {"ref_lesions": 2, "small_ref_lesions": 0, "tp": 2, "fn": 0, "fp": 1}
    assert case1["detection"] == {
        "0.1": {"tp": 2, "fp": 2, "fn": 0},
        "0.25": {"tp": 2, "fp": 2, "fn": 0},
        "0.5": {"tp": 1, "fp": 3, "fn": 1},
    }
    assert (case2["ref_lesions"], case2["pred_lesions"], case2["lesion_dice"]) == (1, 0, 0.0)
    assert case2["detection"]["0.1"] == {"tp": 0, "fp": 0, "fn": 1}

    lesions = result["lesions"]
    assert (lesions["dilation_voxels"], lesions["min_volume_mm3"], lesions["froc_iou"]) == (1, 0.0, 0.1)
    summary = lesions["classes"]["tumour"]
    assert (summary["values"], summary["n_cases"], summary["ref_lesions"], summary["pred_lesions"]) == ([1], 2, 3, 4)
    assert summary["lesion_dice"] == pytest.approx(CASE1_DICE / 2)
    assert summary["voxel_dice"] == pytest.approx(result["per_class"]["tumour"]["dice"]) == VOXEL_DICE_1 / 2
    # Every score is 1.0: AP = precision x recall. IoU 0.1: 2 TP of 4 predictions, 3 lesions -> 1/2 x 2/3.
    # IoU 0.5: 1 TP -> 1/4 x 1/3.
    assert summary["detection"]["0.1"] == {"tp": 2, "fp": 2, "fn": 1, "ap": pytest.approx(1 / 3)}
    assert summary["detection"]["0.25"]["ap"] == pytest.approx(1 / 3)
    assert summary["detection"]["0.5"] == {"tp": 1, "fp": 3, "fn": 2, "ap": pytest.approx(1 / 12)}
    # One operating point: 2 FP over 2 cases = 1 FP/case at sensitivity 2/3; below that, none.
    assert summary["froc"] == pytest.approx({"0.5": 0.0, "1": 2 / 3, "2": 2 / 3, "4": 2 / 3})

    assert "lesion Dice" in out and "AP@0.25" in out and "0.2058" in out and "0.00/0.67/0.67/0.67" in out
    rows = list(csv.DictReader((pred_dir / "evaluation.csv").open()))
    assert list(rows[0]) == list(CSV_COLUMNS + LESION_CSV_COLUMNS)
    tumour1 = next(r for r in rows if r["case"] == "case_1.nii.gz" and r["class"] == "tumour")
    cells = ("ref_lesions", "tp_iou0.5", "fn_iou0.5", "ap_iou0.5")
    assert [tumour1[c] for c in cells] == ["2", "1", "1", ""]  # a case row has no AP
    assert float(tumour1["lesion_dice"]) == pytest.approx(CASE1_DICE)
    organ1 = next(r for r in rows if r["case"] == "case_1.nii.gz" and r["class"] == "organ")
    assert all(organ1[c] == "" for c in LESION_CSV_COLUMNS)
    mean = next(r for r in rows if r["case"] == "mean" and r["class"] == "tumour")
    assert (mean["pred_lesions"], mean["fp_iou0.5"]) == ("4", "3")
    assert float(mean["ap_iou0.1"]) == pytest.approx(1 / 3)


def test_lesion_classes_by_value_workers_and_brats_defaults(folders):
    pred_dir, ref_dir, dataset = folders
    labels = json.loads(dataset.read_text())["labels"]
    serial = evaluate_folders(pred_dir, ref_dir, labels, lesion_classes=["1"])
    assert list(serial["lesions"]["classes"]) == ["tumour"]  # the value names the class of the labels
    # BraTS defaults (dilation 3, 50 mm^3): the 64 mm^3 lesions count, and the matches are those of dilation 1.
    assert serial["cases"][0]["lesions"]["tumour"]["lesion_dice"] == pytest.approx(CASE1_DICE)
    parallel = evaluate_folders(pred_dir, ref_dir, labels, workers=2, lesion_classes=["tumour"])
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)
    # Without labels: values; one present in no file is scored as a class empty everywhere.
    by_value = evaluate_folders(pred_dir, ref_dir, lesion_classes=[1, 5])
    assert list(by_value["classes"]) == ["1", "2", "5"]
    empty = by_value["lesions"]["classes"]["5"]
    assert (empty["ref_lesions"], empty["pred_lesions"], empty["lesion_dice"]) == (0, 0, 1.0)
    assert np.isnan(empty["detection"]["0.1"]["ap"]) and by_value["per_class"]["5"]["dice"] == 1.0


def test_without_the_flag_nothing_changes(folders):
    pred_dir, ref_dir, _ = folders
    result = evaluate_folders(pred_dir, ref_dir)
    assert "lesions" not in result and all("lesions" not in c for c in result["cases"])
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 0
    header = (pred_dir / "evaluation.csv").read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)


def test_bad_lesion_classes(folders, capsys):
    pred_dir, ref_dir, dataset = folders
    classes = {"tumour": (1,), "organ": (2,), "both": (1, 2)}
    assert resolve_lesion_classes(["both", "2", "tumour", "1"], classes) == {
        "both": (1, 2),
        "organ": (2,),
        "tumour": (1,),
    }
    with pytest.raises(ConfigError, match=r"'liver' is unknown; give a class name of the labels \(tumour"):
        resolve_lesion_classes(["liver"], classes)
    with pytest.raises(ConfigError, match="no class of the labels has label value 7"):
        resolve_lesion_classes(["7"], classes)
    with pytest.raises(ConfigError, match="background"):
        resolve_lesion_classes(["0"], None)
    with pytest.raises(ConfigError, match="'tumour' is unknown; give an integer label value"):
        resolve_lesion_classes(["tumour"], None)
    argv = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", str(dataset)]
    assert main(argv + ["--lesion-classes", "liver"]) == 2
    assert "liver" in capsys.readouterr().err
    assert main(argv + ["--lesion-classes", "tumour", "--lesion-dilation", "-1"]) == 2
    assert "--lesion-dilation" in capsys.readouterr().err
