"""Loading nnU-Net v2 and MSD raw datasets, and the DataErrors for unusable dataset folders."""

import json

import numpy as np
import pytest
from raw_dataset_builders import case_arrays, msd_dataset, nnunet_dataset, write

from MaskMedCore.data.dataset import load_dataset, map_cases
from MaskMedCore.data.image_io import image_to_array, shape_dhw
from MaskMedCore.errors import DataError


def test_nnunet_layout(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2, channel_names=("T1", "FLAIR"), num_labels=4)
    ds = load_dataset(tmp_path)
    assert ds.layout == "nnunet" and ds.name == "Synthetic" and ds.file_ending == ".nii.gz"
    assert ds.channel_names == ("T1", "FLAIR")
    assert ds.labels == {"background": 0, "organ1": 1, "organ2": 2, "organ3": 3}
    assert [c.case_id for c in ds.cases] == ["case_000", "case_001"]
    case = ds.cases[1]
    assert [p.name for p in case.image_paths] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert case.label_path == tmp_path / "labelsTr" / "case_001.nii.gz"
    channels, _ = case_arrays(num_labels=4, num_channels=2, seed=1)
    np.testing.assert_array_equal(image_to_array(ds.read_images(case)[1]), channels[1])


@pytest.mark.parametrize("ending", [".mha", ".nrrd"])
def test_any_simpleitk_ending(tmp_path, ending):
    nnunet_dataset(tmp_path, num_cases=2, ending=ending)
    ds = load_dataset(tmp_path)
    assert ds.file_ending == ending and len(ds.cases) == 2


def test_msd_layout_inverts_labels_and_splits_4d_images(tmp_path):
    msd_dataset(tmp_path, num_cases=2, modalities=("T1", "T2"))
    ds = load_dataset(tmp_path)
    assert ds.layout == "msd" and ds.channel_names == ("T1", "T2")
    assert ds.labels == {"background": 0, "region1": 1, "region2": 2}
    case = ds.cases[0]
    assert case.packed_channels and case.case_id == "mri_0"
    images = ds.read_images(case)
    channels, _ = case_arrays(num_channels=2, seed=0)
    assert len(images) == 2 and shape_dhw(images[0]) == (20, 24, 28)
    for image, expected in zip(images, channels):
        np.testing.assert_array_equal(image_to_array(image), expected)


def test_msd_single_modality_is_3d(tmp_path):
    msd_dataset(tmp_path, num_cases=1, modalities=("CT",))
    ds = load_dataset(tmp_path)
    assert not ds.cases[0].packed_channels
    assert shape_dhw(ds.read_images(ds.cases[0])[0]) == (20, 24, 28)


def _edit_json(folder, **changes):
    meta = json.loads((folder / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (folder / "dataset.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"channel_names": None}, "field 'channel_names' is missing"),
        ({"channel_names": {"0": "CT", "2": "PET"}}, "field 'channel_names' keys are"),
        ({"labels": None}, "field 'labels' is missing"),
        ({"labels": {"background": 0, "liver": 2}}, r"field 'labels' values are \[0, 2\]"),
        ({"labels": {"background": 1, "liver": 0}}, "gives 'background' the value 1"),
        ({"labels": {"background": 0, "tumour": [1, 2]}}, "region-based labels are not supported"),
        ({"labels": {"background": 0, "liver": "x"}}, "'x' is not an integer label"),
        ({"file_ending": None}, "field 'file_ending' is None"),
        ({"numTraining": "three"}, "field 'numTraining' must be an integer"),
    ],
)
def test_invalid_dataset_json_names_the_field(tmp_path, changes, pattern):
    nnunet_dataset(tmp_path, num_cases=1)
    _edit_json(tmp_path, **changes)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(tmp_path)
    assert "dataset.json" in str(info.value)


def test_missing_folder_and_missing_or_broken_dataset_json(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match=r"dataset\.json not found"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json is not valid JSON"):
        load_dataset(tmp_path)


def test_empty_dataset(tmp_path):
    nnunet_dataset(tmp_path, num_cases=1)
    for path in [*(tmp_path / "imagesTr").iterdir(), *(tmp_path / "labelsTr").iterdir()]:
        path.unlink()
    with pytest.raises(DataError, match=r"is empty: no training case found in imagesTr/ \(files named <case>_0000"):
        load_dataset(tmp_path)


def test_missing_channel_file_is_listed_not_raised(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2, channel_names=("A", "B"))
    (tmp_path / "imagesTr" / "case_001_0001.nii.gz").unlink()
    (tmp_path / "imagesTr" / "stray.nii.gz").write_bytes(b"")
    ds = load_dataset(tmp_path)
    assert [c.case_id for c in ds.cases] == ["case_000", "case_001"]
    assert not ds.cases[1].image_paths[1].exists()
    assert [p.name for p in ds.unmatched_files] == ["stray.nii.gz"]


def test_map_cases_keeps_order_with_worker_processes():
    assert list(map_cases(abs, [-3, 1, -2, 5], workers=2)) == [3, 1, 2, 5]


def test_nnunet_v1_task_folder_with_split_channels(tmp_path):
    msd_dataset(tmp_path, num_cases=1, modalities=("T1", "T2"))
    image = tmp_path / "imagesTr" / "mri_0.nii.gz"
    channels, _ = case_arrays(num_channels=2, seed=0)
    image.unlink()
    for c, x in enumerate(channels):
        write(x, tmp_path / "imagesTr" / f"mri_0_{c:04d}.nii.gz")
    case = load_dataset(tmp_path).cases[0]
    assert not case.packed_channels and [p.name for p in case.image_paths] == ["mri_0_0000.nii.gz", "mri_0_0001.nii.gz"]
    np.testing.assert_array_equal(image_to_array(load_dataset(tmp_path).read_images(case)[1]), channels[1])
