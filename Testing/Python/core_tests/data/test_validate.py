"""Dataset validation: every bad input is one Problem / one DataError naming the file, and the CLI lists them."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from raw_dataset_builders import case_arrays, nnunet_dataset, write

from MaskMedCore.cli import main
from MaskMedCore.data.dataset import load_dataset
from MaskMedCore.data.validate import check_dataset, label_values, read_case, validate_dataset
from MaskMedCore.errors import DataError

# case -> (what is broken, a regex the problem / DataError must match)
BROKEN = {
    "case_001": ("missing image", r"imagesTr/case_001_0000\.nii\.gz: file not found"),
    "case_002": ("corrupt image", r"imagesTr/case_002_0000\.nii\.gz: is truncated"),
    "case_003": (
        "2D vector image",
        r"imagesTr/case_003_0000\.nii\.gz: is a vector image with 3 components per pixel \(3 channels\) but "
        r"dataset\.json expects 1 channel",
    ),
    "case_004": ("4D image", r"imagesTr/case_004_0000\.nii\.gz: is a 4D image with 2 volumes"),
    "case_005": (
        "stray label",
        r"label value\(s\) 7 in labelsTr/case_005\.nii\.gz not in dataset\.json labels \{0, 1, 2\}",
    ),
    "case_006": ("geometry", r"labelsTr/case_006\.nii\.gz is not on the voxel grid of image .*spacing"),
    "case_007": ("NaN", r"imagesTr/case_007_0000\.nii\.gz: has 3 NaN and 1 infinite"),
    "case_008": ("channel grid", r"imagesTr/case_008_0001\.nii\.gz is not on the voxel grid of .*size"),
}


@pytest.fixture(scope="module")
def broken_dataset(tmp_path_factory):
    root = nnunet_dataset(tmp_path_factory.mktemp("broken"), num_cases=9, channel_names=("CT", "PET"))
    images, labels = root / "imagesTr", root / "labelsTr"
    (images / "case_001_0000.nii.gz").unlink()
    data = (images / "case_002_0000.nii.gz").read_bytes()
    (images / "case_002_0000.nii.gz").write_bytes(data[: len(data) // 2])
    rgb = sitk.GetImageFromArray(np.zeros((24, 28, 3), np.uint8), isVector=True)  # 2D, 3 components
    sitk.WriteImage(rgb, str(images / "case_003_0000.nii.gz"))
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((20, 24, 28), np.float32))] * 2)
    sitk.WriteImage(four_d, str(images / "case_004_0000.nii.gz"))
    _, seg = case_arrays(seed=5)
    seg[0, 0, 0] = 7
    write(seg, labels / "case_005.nii.gz")
    write(case_arrays(seed=6)[1], labels / "case_006.nii.gz", spacing=(2.0, 1.0, 1.0))
    x = case_arrays(num_channels=2, seed=7)[0][0]
    x[1, 1, 1:4] = np.nan
    x[2, 2, 2] = np.inf
    write(x, images / "case_007_0000.nii.gz")
    write(np.ones((20, 24, 27), np.float32), images / "case_008_0001.nii.gz")
    return root


def test_clean_dataset_has_no_problems(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2, channel_names=("A", "B"))
    assert validate_dataset(load_dataset(tmp_path)) == []


def test_every_broken_case_gives_exactly_one_problem(broken_dataset):
    problems = validate_dataset(load_dataset(broken_dataset))
    by_case = {}
    for p in problems:
        by_case.setdefault(p.case_id, []).append(p)
    assert sorted(by_case) == sorted(BROKEN)
    for case_id, (what, pattern) in BROKEN.items():
        assert len(by_case[case_id]) == 1, (what, by_case[case_id])
        problem = by_case[case_id][0]
        assert re.search(pattern, problem.message), (what, problem.message)
        assert problem.fix


def test_workers_give_the_same_problems(broken_dataset):
    ds = load_dataset(broken_dataset)
    assert validate_dataset(ds, workers=2) == validate_dataset(ds, workers=1)


@pytest.mark.parametrize("case_id", sorted(BROKEN))
def test_read_case_raises_one_clear_data_error(broken_dataset, case_id):
    ds = load_dataset(broken_dataset)
    with pytest.raises(DataError, match=BROKEN[case_id][1]) as info:
        read_case(ds, ds.case(case_id))
    assert str(info.value).startswith(f"case {case_id}: ")


def test_read_case_returns_checked_images(broken_dataset):
    ds = load_dataset(broken_dataset)
    images, label = read_case(ds, ds.case("case_000"))
    assert len(images) == 2 and sitk.GetArrayViewFromImage(label).max() == 2


def test_dataset_level_problems(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["numTraining"] = 5
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    (tmp_path / "imagesTr" / "notes_0003.nii.gz").write_bytes(b"")
    problems = validate_dataset(load_dataset(tmp_path))
    assert [p.case_id for p in problems] == [None, None]
    assert "numTraining is 5 but 2 case(s)" in problems[0].message
    assert str(problems[1]).startswith("dataset: imagesTr/notes_0003.nii.gz does not match")


def test_cli_lists_each_problem_on_one_line_and_exits_1(broken_dataset, capsys):
    assert main(["validate-dataset", str(broken_dataset), "--workers", "2"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(BROKEN) + 1
    for line, (case_id, (_, pattern)) in zip(lines, sorted(BROKEN.items())):
        assert line.startswith(f"case {case_id}: ") and "; fix: " in line
        assert re.search(pattern, line)
    assert lines[-1].startswith(f"{len(BROKEN)} problem(s) in {len(BROKEN)} of 9 case(s)")


def test_cli_clean_dataset_exits_0_and_unusable_folder_exits_2(tmp_path, capsys):
    nnunet_dataset(tmp_path / "ok", num_cases=1)
    assert main(["validate-dataset", str(tmp_path / "ok")]) == 0
    assert "is valid: 1 case(s)" in capsys.readouterr().out
    assert main(["validate-dataset", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json not found" in err[0]


def test_label_values_fast_path_matches_unique():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.int16, np.int64, np.uint64, np.float32):
        array = rng.integers(0, 9, (5, 6, 7)).astype(dtype)
        array[0, 0, 0] = 3
        assert label_values(array) == [int(v) for v in np.unique(array)]
    assert label_values(np.array([[[-2, 5]]], np.int16)) == [-2, 5]


def test_msd_layout_with_nrrd_images_and_slicer_segmentation_labels(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    training = []
    for i in range(2):
        channels, labels = case_arrays(seed=i)
        write(channels[0], tmp_path / "imagesTr" / f"s{i}.nrrd", spacing=(2.5, 0.7, 0.7))
        seg = sitk.GetImageFromArray(labels)
        seg.SetSpacing((0.7, 0.7, 2.5))
        seg.SetMetaData("Segment0_ID", "organ1")
        sitk.WriteImage(seg, str(tmp_path / "labelsTr" / f"s{i}.seg.nrrd"), True)
        training.append({"image": f"./imagesTr/s{i}.nrrd", "label": f"./labelsTr/s{i}.seg.nrrd"})
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "a", "2": "b"}, "training": training}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(tmp_path)
    assert ds.file_ending == ".nrrd" and [c.case_id for c in ds.cases] == ["s0", "s1"]
    assert validate_dataset(ds) == []
    images, label = read_case(ds, ds.cases[1])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), case_arrays(seed=1)[1])


def test_mixed_orientations_are_a_warning_not_a_problem(tmp_path, capsys):
    """Two cases stored LPS and one x/y-flipped (RAS): usable, but the CLI warns, naming the cases."""
    root = nnunet_dataset(tmp_path / "mixed", num_cases=3)
    channels, labels = case_arrays(seed=2)
    ras = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    write(channels[0], root / "imagesTr" / "case_002_0000.nii.gz", direction=ras)
    write(labels, root / "labelsTr" / "case_002.nii.gz", direction=ras)
    report = check_dataset(load_dataset(root), workers=2)
    assert report.problems == []
    assert len(report.warnings) == 1
    assert "2 LPS (case_000, case_001); 1 RAS (case_002)" in report.warnings[0]
    assert main(["validate-dataset", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warning: cases are stored in different orientations" in out and "is valid: 3 case(s)" in out


def test_one_orientation_gives_no_warning(tmp_path):
    root = nnunet_dataset(tmp_path, num_cases=2, direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    assert check_dataset(load_dataset(root)).warnings == []
