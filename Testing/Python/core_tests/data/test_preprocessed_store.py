"""The preprocessed cache: case files, class locations, reuse and invalidation, default folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from raw_dataset_builders import case_arrays, link_brats, nnunet_dataset, write

from MaskMedCore.config.plan_config import ChannelNormalization, PlanConfig
from MaskMedCore.data.dataset import load_dataset
from MaskMedCore.data.fingerprint import compute_fingerprint
from MaskMedCore.data.planner import plan_dataset
from MaskMedCore.data.preprocessed_store import (
    MAX_CLASS_LOCATIONS,
    class_locations,
    default_preprocessed_dir,
    list_cases,
    load_case,
    load_plan,
    preprocess_dataset,
    save_case,
)
from MaskMedCore.data.validate import validate_dataset
from MaskMedCore.errors import ConfigError, DataError


def _plan(target_spacing=(1.0, 1.0, 1.0), patch=(8, 8, 8)):
    return PlanConfig(
        dataset_name="Synthetic",
        channel_names=("CT",),
        labels={"background": 0, "organ1": 1, "organ2": 2},
        file_ending=".nii.gz",
        normalization=[ChannelNormalization("ct", mean=150.0, std=40.0, lower=0.0, upper=300.0)],
        target_spacing=target_spacing,
        patch_size=patch,
        batch_size=2,
        features_per_stage=(32, 64),
        kernel_sizes=((3, 3, 3), (3, 3, 3)),
        strides=((1, 1, 1), (2, 2, 2)),
        median_shape=(14, 17, 20),
    )


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 30, 31, 32)).astype(np.float32)
    labels = np.zeros((30, 31, 32), np.int16)
    labels[:25, :25, :25] = 1  # 15,625 voxels: more than the 10,000 kept
    labels[26:28, 27:29, 1:3] = 3
    props = {"original_shape": [30, 31, 32], "crop_bbox": [[0, 30], [0, 31], [0, 32]]}
    save_case(tmp_path, "c1", image, labels, props)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.json", "c1.npy", "c1_seg.npy"]  # no temp files
    case = load_case(tmp_path, "c1")
    assert isinstance(case.image, np.memmap) and case.image.dtype == np.float32 and case.labels.dtype == np.int16
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.labels, labels)
    assert case.properties == props
    assert sorted(case.class_locations) == [1, 3]
    ones, threes = case.class_locations[1], case.class_locations[3]
    assert ones.shape == (MAX_CLASS_LOCATIONS, 3) and len(np.unique(ones, axis=0)) == MAX_CLASS_LOCATIONS
    assert threes.shape == (8, 3)
    for value, coords in case.class_locations.items():
        assert np.all(labels[tuple(coords.T)] == value)
    in_memory = load_case(tmp_path, "c1", mmap=False)
    assert not isinstance(in_memory.image, np.memmap)


def test_class_locations_are_seeded():
    labels = np.random.default_rng(1).integers(0, 3, (40, 40, 40)).astype(np.int16)
    a, b = class_locations(labels), class_locations(labels)
    assert all(np.array_equal(a[k], b[k]) for k in (1, 2))
    assert not np.array_equal(a[1], class_locations(labels, seed=7)[1])


def test_case_without_labels_and_missing_case(tmp_path):
    save_case(tmp_path, "x", np.zeros((1, 2, 3, 4), np.float32), None, {"a": 1})
    case = load_case(tmp_path, "x")
    assert case.labels is None and case.class_locations == {}
    with pytest.raises(DataError, match=r"y\.npy not found; run 'maskmed plan"):
        load_case(tmp_path, "y")


def test_cache_is_reused_and_invalidated(tmp_path):
    raw = nnunet_dataset(tmp_path / "raw", num_cases=3)
    dataset, out = load_dataset(raw), tmp_path / "pre"
    first = preprocess_dataset(dataset, _plan(), out, workers=2, progress=False)
    assert first.computed == ("case_000", "case_001", "case_002") and first.reused == ()
    assert list_cases(out) == list(first.case_ids) and load_plan(out) == _plan()
    before = _mtimes(out)
    assert not [name for name in before if name.startswith(".")]  # no temp files left

    # Same plan (a new patch size does not change preprocessing), unchanged inputs: nothing rewritten.
    second = preprocess_dataset(dataset, _plan(patch=(16, 16, 16)), out, progress=False)
    assert second.computed == () and second.reused == first.case_ids
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k.startswith("case_")} == {
        k: v for k, v in before.items() if k.startswith("case_")
    }

    # One input changes: only that case is recomputed.
    x, y = case_arrays(seed=42)
    write(x[0] * 2, raw / "imagesTr" / "case_001_0000.nii.gz")
    third = preprocess_dataset(dataset, _plan(), out, progress=False)
    assert third.computed == ("case_001",) and third.reused == ("case_000", "case_002")
    assert _mtimes(out)["case_000.npy"] == before["case_000.npy"]
    assert _mtimes(out)["case_001.npy"] != before["case_001.npy"]

    # Another target spacing invalidates every case; a case that left the dataset is removed.
    (raw / "imagesTr" / "case_002_0000.nii.gz").unlink()
    (raw / "labelsTr" / "case_002.nii.gz").unlink()
    fourth = preprocess_dataset(load_dataset(raw), _plan((2.0, 1.0, 1.0)), out, progress=False)
    assert fourth.computed == ("case_000", "case_001")
    assert load_case(out, "case_000").image.shape == (1, 7, 17, 20)
    assert not (out / "case_002.npy").exists() and list_cases(out) == ["case_000", "case_001"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_output_folder_must_not_be_inside_the_dataset(tmp_path):
    dataset = load_dataset(nnunet_dataset(tmp_path / "raw", num_cases=1))
    with pytest.raises(ConfigError, match="inside the dataset folder"):
        preprocess_dataset(dataset, _plan(), tmp_path / "raw" / "cache", progress=False)


def test_default_preprocessed_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKMED_PREPROCESSED", str(tmp_path / "pp"))
    a, b = default_preprocessed_dir(tmp_path / "x" / "Task09"), default_preprocessed_dir(tmp_path / "y" / "Task09")
    assert a.parent == tmp_path / "pp" and a.name.startswith("Task09-") and len(a.name) == len("Task09-") + 8
    assert a != b and default_preprocessed_dir(tmp_path / "x" / "Task09") == a
    monkeypatch.delenv("MASKMED_PREPROCESSED")
    home = default_preprocessed_dir(tmp_path / "x" / "Task09")
    assert home.parent == Path.home() / ".cache" / "maskmed" / "preprocessed"


@pytest.mark.realdata
def test_brats_validate_fingerprint_plan_preprocess(shared_data, tmp_path):
    dataset = load_dataset(link_brats(shared_data, tmp_path / "brats"))
    assert validate_dataset(dataset, workers=2) == []
    fingerprint = compute_fingerprint(dataset, workers=2, num_samples=100_000)
    plan = plan_dataset(dataset, fingerprint, patch_size=(32, 32, 32))
    assert [n.scheme for n in plan.normalization] == ["zscore", "zscore"]
    assert plan.target_spacing == (1.0, 1.0, 1.0) and plan.num_classes == 5
    out = tmp_path / "pre"
    summary = preprocess_dataset(dataset, plan, out, workers=2, progress=False)
    assert len(summary.computed) == 2
    case = load_case(out, summary.case_ids[0])
    C, D, H, W = case.image.shape
    assert C == 2 and case.labels.shape == (D, H, W) == tuple(case.properties["shape_after_resampling"])
    assert set(np.unique(case.labels)) == {0, 1, 2, 3, 4} and sorted(case.class_locations) == [1, 2, 3, 4]
    assert abs(float(case.image[0].mean())) < 0.05 and abs(float(case.image[0].std()) - 1) < 0.05
    assert json.loads((out / "plan.json").read_text())["patch_size"] == [32, 32, 32]
