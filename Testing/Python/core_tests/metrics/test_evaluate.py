"""Folder evaluation (``evaluate_folders``, ``write_report``) and the ``maskmed evaluate`` command."""

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.cli import main
from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.metrics import evaluate_folders, read_dataset_labels, write_report

SPACING_XYZ = (0.5, 0.5, 3.0)  # SimpleITK order; (D, H, W) = (3.0, 0.5, 0.5)
SHAPE = (24, 20, 20)  # (D, H, W)


def write_label_map(path, array, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    """Two cases.

    case_a: class 1 is two 10^3 cubes 2 voxels apart along D (Dice 0.8, HD95 6 mm, NSD@2mm 352/488,
            see test_overlap_surface.two_cubes); class 2 identical in both.
    case_b: class 1 identical; class 2 only in the reference (Dice 0, HD95 undefined, NSD 0).
    """
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    ref_a = np.zeros(SHAPE, np.uint8)
    pred_a = np.zeros(SHAPE, np.uint8)
    ref_a[5:15, 5:15, 5:15] = 1
    pred_a[7:17, 5:15, 5:15] = 1
    ref_a[18:22, 1:4, 1:4] = 2
    pred_a[18:22, 1:4, 1:4] = 2
    ref_b = np.zeros(SHAPE, np.uint8)
    ref_b[2:6, 2:8, 2:8] = 1
    pred_b = ref_b.copy()
    ref_b[10:12, 10:12, 10:12] = 2
    write_label_map(pred_dir / "case_a.nii.gz", pred_a)
    write_label_map(ref_dir / "case_a.nii.gz", ref_a)
    write_label_map(pred_dir / "case_b.nii.gz", pred_b)
    write_label_map(ref_dir / "case_b.nii.gz", ref_b)
    (pred_dir / "plans.json").write_text("{}")  # not a volume: ignored
    return pred_dir, ref_dir


NSD_CUBES = 352 / 488


def check_expected(result, name1="1", name2="2"):
    assert result["n_cases"] == 2
    a, b = result["cases"]
    assert a["case"] == "case_a.nii.gz" and a["spacing"] == [3.0, 0.5, 0.5]
    assert a["metrics"][name1]["dice"] == pytest.approx(0.8)
    assert a["metrics"][name1]["hd95"] == pytest.approx(6.0)
    assert a["metrics"][name1]["nsd"] == pytest.approx(NSD_CUBES)
    assert a["metrics"][name1]["pred_voxels"] == a["metrics"][name1]["ref_voxels"] == 1000
    assert b["metrics"][name2]["dice"] == 0.0 and math.isnan(b["metrics"][name2]["hd95"])
    c1, c2 = result["per_class"][name1], result["per_class"][name2]
    assert c1["dice"] == pytest.approx(0.9) and c1["hd95"] == pytest.approx(3.0)
    assert c1["nsd"] == pytest.approx((NSD_CUBES + 1) / 2) and c1["n_hd95_undefined"] == 0
    assert c2["dice"] == pytest.approx(0.5) and c2["hd95"] == 0.0 and c2["nsd"] == pytest.approx(0.5)
    assert c2["n_hd95_undefined"] == 1 and c2["n_cases"] == 2
    assert result["mean"]["dice"] == pytest.approx(0.7)
    assert result["mean"]["hd95"] == pytest.approx(1.5)
    assert result["mean"]["nsd"] == pytest.approx(((NSD_CUBES + 1) / 2 + 0.5) / 2)


def test_evaluate_folders_values(folders):
    pred_dir, ref_dir = folders
    result = evaluate_folders(pred_dir, ref_dir, tolerance_mm=2.0)
    assert result["classes"] == {"1": [1], "2": [2]} and result["ignored_values"] == []
    check_expected(result)


def test_parallel_workers_give_the_same_result(folders):
    pred_dir, ref_dir = folders
    serial = evaluate_folders(pred_dir, ref_dir)
    parallel = evaluate_folders(pred_dir, ref_dir, workers=2)
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)


def test_named_labels_regions_and_ignored_values(folders):
    pred_dir, ref_dir = folders
    result = evaluate_folders(pred_dir, ref_dir, {"background": 0, "cube": 1})
    assert list(result["per_class"]) == ["cube"]  # background is never scored
    assert result["ignored_values"] == [2]
    assert result["cases"][0]["metrics"]["cube"]["dice"] == pytest.approx(0.8)
    result = evaluate_folders(pred_dir, ref_dir, {"cube": 1, "all": [1, 2]})
    assert result["ignored_values"] == []
    # case_b, region 1|2: the prediction misses the 8 voxels of class 2 out of 144 + 8.
    assert result["cases"][1]["metrics"]["all"]["dice"] == pytest.approx(2 * 144 / (144 + 152))


def test_class_absent_from_a_whole_case_counts_as_both_empty(tmp_path, folders):
    pred_dir, ref_dir = folders
    label3 = np.zeros(SHAPE, np.uint8)
    label3[1:3, 1:3, 1:3] = 3
    write_label_map(pred_dir / "case_c.nii.gz", label3)
    write_label_map(ref_dir / "case_c.nii.gz", label3)
    result = evaluate_folders(pred_dir, ref_dir)
    assert list(result["classes"]) == ["1", "2", "3"]
    both_empty = {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "pred_voxels": 0, "ref_voxels": 0}
    assert result["cases"][0]["metrics"]["3"] == both_empty


def test_write_report_json_and_csv(folders, tmp_path):
    pred_dir, ref_dir = folders
    result = evaluate_folders(pred_dir, ref_dir)
    json_path, csv_path = write_report(result, tmp_path / "r.json", tmp_path / "r.csv")
    loaded = json.loads(json_path.read_text())  # strict JSON: nan became null
    assert loaded["cases"][1]["metrics"]["2"]["hd95"] is None
    assert loaded["per_class"]["1"]["dice"] == pytest.approx(0.9)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 * 2 + 2 + 1
    assert rows[0]["case"] == "case_a.nii.gz" and float(rows[0]["hd95"]) == pytest.approx(6.0)
    assert rows[3]["class"] == "2" and rows[3]["hd95"] == "" and float(rows[3]["dice"]) == 0.0
    assert rows[5] == {
        "case": "mean",
        "class": "2",
        "dice": "0.5",
        "hd95": "0",
        "nsd": "0.5",
        "pred_voxels": "",
        "ref_voxels": "",
        "n_hd95_undefined": "1",
    }
    assert rows[6]["class"] == "foreground_mean" and float(rows[6]["dice"]) == pytest.approx(0.7)


def test_geometry_mismatch_names_the_file(folders):
    pred_dir, ref_dir = folders
    write_label_map(pred_dir / "case_b.nii.gz", np.zeros(SHAPE), spacing=(0.5, 0.5, 2.0))
    with pytest.raises(DataError, match=r"spacing of prediction .*case_b\.nii\.gz.*resample"):
        evaluate_folders(pred_dir, ref_dir)
    write_label_map(pred_dir / "case_b.nii.gz", np.zeros(SHAPE), origin=(0.0, 5.0, 0.0))
    with pytest.raises(DataError, match=r"origin of prediction .*case_b\.nii\.gz"):
        evaluate_folders(pred_dir, ref_dir)
    write_label_map(pred_dir / "case_b.nii.gz", np.zeros((24, 20, 21)))
    with pytest.raises(DataError, match=r"size of prediction .*case_b\.nii\.gz is \(21, 20, 24\)"):
        evaluate_folders(pred_dir, ref_dir)


def test_missing_counterparts(folders):
    pred_dir, ref_dir = folders
    (pred_dir / "case_b.nii.gz").rename(pred_dir / "case_x.nii.gz")
    with pytest.raises(DataError, match=r"prediction .*case_b\.nii\.gz missing for reference"):
        evaluate_folders(pred_dir, ref_dir)
    (ref_dir / "case_b.nii.gz").unlink()
    with pytest.raises(DataError, match=r"reference .*case_x\.nii\.gz missing for prediction"):
        evaluate_folders(pred_dir, ref_dir)


def test_bad_inputs(folders, tmp_path):
    pred_dir, ref_dir = folders
    with pytest.raises(DataError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", ref_dir)
    with pytest.raises(DataError, match="no label maps"):
        evaluate_folders(pred_dir, tmp_path)
    with pytest.raises(ConfigError, match="workers"):
        evaluate_folders(pred_dir, ref_dir, workers=0)
    with pytest.raises(ConfigError, match="labels"):
        evaluate_folders(pred_dir, ref_dir, {"x": "one"})
    write_label_map(pred_dir / "case_a.nii.gz", np.zeros(SHAPE))
    image = sitk.GetImageFromArray(np.full(SHAPE, 0.5, np.float32))
    sitk.WriteImage(image, str(ref_dir / "case_a.nii.gz"))
    with pytest.raises(DataError, match=r"case_a\.nii\.gz has non-integer voxel values"):
        evaluate_folders(pred_dir, ref_dir)


def test_read_dataset_labels(tmp_path):
    nnunet = tmp_path / "nnunet.json"
    nnunet.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": [1, 2]}}))
    assert read_dataset_labels(nnunet) == {"background": 0, "liver": 1, "tumour": (1, 2)}
    msd = tmp_path / "msd.json"
    msd.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    assert read_dataset_labels(msd) == {"background": 0, "liver": 1, "cancer": 2}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"liver": "one"}}))
    with pytest.raises(DataError, match="liver"):
        read_dataset_labels(bad)
    bad.write_text("not json")
    with pytest.raises(DataError, match="bad.json"):
        read_dataset_labels(bad)


def test_command_writes_reports_and_prints_a_table(folders, capsys):
    pred_dir, ref_dir = folders
    dataset = ref_dir.parent / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"0": "background", "1": "cube", "2": "small"}}))
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "cube" in out and "0.9000" in out and "NSD@2mm" in out
    result = json.loads((pred_dir / "evaluation.json").read_text())
    assert (pred_dir / "evaluation.csv").is_file()
    check_expected(
        {**result, "cases": [_nan(c) for c in result["cases"]]}, name1="cube", name2="small"
    )  # null -> nan for the shared checks


def _nan(case):
    metrics = {k: {m: (math.nan if v is None else v) for m, v in d.items()} for k, d in case["metrics"].items()}
    return {**case, "metrics": metrics}


def test_command_custom_prefix_and_tolerance(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    prefix = tmp_path / "out" / "scores"
    prefix.parent.mkdir()
    argv = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(prefix), "--tolerance", "6"]
    assert main(argv + ["--workers", "2"]) == 0
    result = json.loads(prefix.with_suffix(".json").read_text())
    assert result["cases"][0]["metrics"]["1"]["nsd"] == 1.0
    assert "NSD@6mm" in capsys.readouterr().out


def test_command_errors_exit_2_with_one_line(folders, capsys):
    pred_dir, ref_dir = folders
    (pred_dir / "case_b.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case_b.nii.gz missing" in err[0]
    write_label_map(pred_dir / "case_b.nii.gz", np.zeros(SHAPE), spacing=(1.0, 1.0, 1.0))
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert "spacing" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--workers", "0"]) == 2
