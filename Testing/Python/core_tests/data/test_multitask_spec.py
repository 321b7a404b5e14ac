"""dataset.json multi-task fields (issue 12): instance_classes and case_labels, read, checked and validated."""

import json
import pickle
import re

import numpy as np
import pytest
import SimpleITK as sitk
from raw_dataset_builders import msd_dataset, nnunet_dataset, write

from MaskMedCore.data.dataset import RawDataset, load_dataset
from MaskMedCore.data.multitask_spec import MultiTaskSpec, read_multitask_spec
from MaskMedCore.data.validate import check_dataset, validate_dataset
from MaskMedCore.errors import DataError

TASKS = {"lesion_count": ["none", "one", "several"], "lesion_type": ["none", "hypodense", "hyperdense"]}


def _add_fields(root, **fields):
    """Add ``fields`` to ``root``/dataset.json; returns ``root``."""
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta.update(fields)
    meta_path.write_text(json.dumps(meta))
    return root


def _read(fields, labels=None):
    labels = labels or {"background": 0, "liver": 1, "lesion": 2}
    return read_multitask_spec(fields, labels, meta_path="/data/Dataset1/dataset.json")


def test_nnunet_dataset_reads_instance_classes_and_case_labels(tmp_path):
    nnunet_dataset(tmp_path, num_cases=3)  # labels background, organ1, organ2; cases case_000..case_002
    cases = {"case_000": {"lesion_count": "one", "lesion_type": "hypodense"}, "case_002": {"lesion_count": "none"}}
    _add_fields(tmp_path, instance_classes=["organ2"], case_labels={"tasks": TASKS, "cases": cases})
    spec = load_dataset(tmp_path).multitask
    assert spec.instance_classes == ("organ2",)
    assert spec.case_tasks == (
        ("lesion_count", ("none", "one", "several")),
        ("lesion_type", ("none", "hypodense", "hyperdense")),
    )
    assert spec.case_labels == cases and not spec.empty
    assert spec.instance_values(load_dataset(tmp_path).labels) == (2,)
    targets = spec.case_targets(["case_000", "case_001", "case_002", "elsewhere"])
    assert targets.dtype == np.int64 and targets.shape == (4, 2)
    np.testing.assert_array_equal(targets, [[1, 1], [-1, -1], [0, -1], [-1, -1]])
    assert validate_dataset(load_dataset(tmp_path)) == []


def test_msd_dataset_reads_the_same_fields(tmp_path):
    msd_dataset(tmp_path, num_cases=2, num_labels=3)  # labels {"0": background, "1": region1, "2": region2}
    tasks = {"grade": ["low", "high"]}
    _add_fields(tmp_path, instance_classes=["region2", "region1"], case_labels={"tasks": tasks, "cases": {}})
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "msd"
    spec = dataset.multitask
    assert spec.instance_classes == ("region2", "region1")
    assert spec.instance_values(dataset.labels) == (1, 2)  # dataset label order, not file order
    assert spec.case_tasks == (("grade", ("low", "high")),)
    np.testing.assert_array_equal(spec.case_targets(["mri_0", "mri_1"]), [[-1], [-1]])


def test_dataset_without_the_fields_has_an_empty_spec(tmp_path):
    nnunet_dataset(tmp_path, num_cases=1)
    spec = load_dataset(tmp_path).multitask
    assert spec == MultiTaskSpec() and spec.empty
    assert spec.case_targets(["case_000"]).shape == (1, 0)
    assert spec.instance_values({"background": 0}) == ()


def test_raw_dataset_default_and_pickling(tmp_path):
    nnunet_dataset(tmp_path, num_cases=1)
    _add_fields(
        tmp_path, instance_classes=["organ1"], case_labels={"tasks": TASKS, "cases": {"x": {"lesion_type": "none"}}}
    )
    dataset = load_dataset(tmp_path)
    plain = RawDataset(dataset.folder, "n", ("CT",), dict(dataset.labels), ".nii.gz", [])
    assert plain.multitask.empty
    # Datasets are pickled to worker processes; the read-only case labels must survive it.
    again = pickle.loads(pickle.dumps(dataset))
    assert again.multitask == dataset.multitask and dict(again.multitask.case_labels["x"]) == {"lesion_type": "none"}
    with pytest.raises(TypeError):
        dataset.multitask.case_labels["x"]["lesion_type"] = "one"  # read-only


def test_to_meta_round_trips():
    spec = MultiTaskSpec(("lesion",), (("grade", ("low", "high")),), {"a": {"grade": "high"}})
    assert _read(spec.to_meta()) == spec
    assert MultiTaskSpec().to_meta() == {}


@pytest.mark.parametrize(
    "fields, pattern",
    [
        ({"instance_classes": "lesion"}, r"'instance_classes' is 'lesion'; expected a list of label names"),
        ({"instance_classes": [2]}, r"'instance_classes' is \[2\]; expected a list of label names"),
        ({"instance_classes": ["tumour"]}, r"'instance_classes' names 'tumour', which is not in 'labels'.*'liver'"),
        ({"instance_classes": ["background"]}, r"'instance_classes' names 'background', the background"),
        ({"instance_classes": ["lesion", "lesion"]}, r"'instance_classes' lists \['lesion'\] more than once"),
        ({"case_labels": ["grade"]}, r"'case_labels' is list; expected an object"),
        ({"case_labels": {"tasks": {"g": ["a", "b"]}, "case": {}}}, r"'case_labels' has unknown key\(s\) \['case'\]"),
        ({"case_labels": {"cases": {}}}, r"'case_labels'\.tasks is None; expected task -> class names"),
        ({"case_labels": {"tasks": {"grade": ["low"]}}}, r"'case_labels'\.tasks\.grade has 1 class\(es\) \['low'\]"),
        ({"case_labels": {"tasks": {"grade": "low"}}}, r"'case_labels'\.tasks\.grade is 'low'; expected a list"),
        (
            {"case_labels": {"tasks": {"grade": ["low", "high", "low"]}}},
            r"'case_labels'\.tasks\.grade lists class\(es\) \['low'\] more than once",
        ),
        (
            {"case_labels": {"tasks": {"grade": ["low", "high"]}, "cases": {"c1": {"stage": "low"}}}},
            r"'case_labels'\.cases\.c1 names task 'stage', which is not in .*\['grade'\]",
        ),
        (
            {"case_labels": {"tasks": {"grade": ["low", "high"]}, "cases": {"c1": {"grade": "mid"}}}},
            r"'case_labels'\.cases\.c1\.grade is 'mid', not a class of task 'grade'; expected one of \['low', 'high'\]",
        ),
        (
            {"case_labels": {"tasks": {"grade": ["low", "high"]}, "cases": {"c1": "low"}}},
            r"'case_labels'\.cases\.c1 is 'low'; expected \{task: class\}",
        ),
        (
            {"case_labels": {"tasks": {"grade": ["low", "high"]}, "cases": ["c1"]}},
            r"'case_labels'\.cases is list; expected case id",
        ),
    ],
)
def test_bad_fields_name_the_file_field_and_value(fields, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        _read(fields)
    message = str(info.value)
    assert message.startswith("/data/Dataset1/dataset.json: field ") and "\n" not in message


def test_load_dataset_raises_for_a_bad_field(tmp_path):
    nnunet_dataset(tmp_path, num_cases=1)
    _add_fields(tmp_path, instance_classes=["organ9"])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path.resolve() / 'dataset.json'}: field 'instance_classes'")):
        load_dataset(tmp_path)


def test_direct_construction_is_checked():
    with pytest.raises(DataError, match="case_tasks"):
        MultiTaskSpec(case_tasks=(("grade", ("low",)),))
    with pytest.raises(DataError, match=r"case_labels\['a'\]: grade='mid'"):
        MultiTaskSpec(case_tasks=(("grade", ("low", "high")),), case_labels={"a": {"grade": "mid"}})
    with pytest.raises(DataError, match=r"\['lesion'\] are not in the dataset labels"):
        MultiTaskSpec(("lesion",)).instance_values({"background": 0, "liver": 1})


def test_validation_reports_unknown_case_ids(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2)
    cases = {f"ghost_{i}": {"grade": "low"} for i in range(7)} | {"case_001": {"grade": "high"}}
    _add_fields(tmp_path, case_labels={"tasks": {"grade": ["low", "high"]}, "cases": cases})
    problems = validate_dataset(load_dataset(tmp_path))
    assert len(problems) == 1
    (problem,) = problems
    assert problem.case_id is None
    assert "case_labels.cases has 7 case id(s) that are not cases of the dataset: ghost_0, ghost_1" in problem.message
    assert problem.message.endswith(", ...") and "case_001" not in problem.message


def test_validation_reports_an_instance_class_without_voxels(tmp_path):
    nnunet_dataset(tmp_path, num_cases=2, num_labels=3)
    _add_fields(tmp_path, instance_classes=["organ2", "organ1"])
    assert validate_dataset(load_dataset(tmp_path), workers=1) == []
    # Relabel organ2 as organ1 everywhere: organ2 is declared but never present.
    for path in sorted((tmp_path / "labelsTr").iterdir()):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        write(np.where(array == 2, 1, array).astype(np.uint8), path)
    report = check_dataset(load_dataset(tmp_path))
    assert [str(p) for p in report.problems] == [
        "dataset: instance class 'organ2' (label 2) has no voxel in any of the 2 label map(s) read; fix: check "
        "its value in dataset.json 'labels', or remove it from 'instance_classes'"
    ]
