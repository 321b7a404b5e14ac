"""Lesion phantoms (issue 12): lesions inside liver/kidneys, one instance per lesion, case labels that agree
with what was drawn, the plain phantom unchanged, the written dataset and the CLI flag."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MaskMedCore.cli import main
from MaskMedCore.data.dataset import load_dataset
from MaskMedCore.data.phantom import PHANTOM_LABELS, generate_phantom, write_phantom_dataset
from MaskMedCore.data.phantom_lesions import (
    LESION_CASE_TASKS,
    LESION_LABEL,
    LESION_PHANTOM_LABELS,
    MIN_LESION_VOXELS,
    generate_lesion_phantom,
)
from MaskMedCore.data.validate import validate_dataset
from MaskMedCore.errors import ConfigError

HOSTS = {PHANTOM_LABELS[name] for name in ("liver", "kidney_left", "kidney_right")}
SEEDS = range(8)
SMALL = (16, 32, 32)
FULL_26 = np.ones((3, 3, 3), bool)


def _arrays(case):
    return tuple(sitk.GetArrayFromImage(x) for x in case[:3])


@pytest.fixture(scope="module")
def cases():
    """seed -> (lesion phantom, its (image, labels, instances) arrays, plain phantom (image, labels) arrays)."""
    out = {}
    for seed in SEEDS:
        case = generate_lesion_phantom(seed)
        plain = tuple(sitk.GetArrayFromImage(x) for x in generate_phantom(seed))
        out[seed] = (case, _arrays(case), plain)
    return out


def test_seeds_cover_every_count_and_type(cases):
    labels = [case.case_labels for case, *_ in cases.values()]
    assert {c["lesion_count"] for c in labels} == {"none", "one", "several"}
    assert {c["lesion_type"] for c in labels} == {"none", "hypodense", "hyperdense"}


def test_each_lesion_is_one_component_inside_its_organ(cases):
    for seed, (_, (_, labels, instances), (_, plain_labels)) in cases.items():
        assert instances.dtype == np.uint16
        np.testing.assert_array_equal(instances > 0, labels == LESION_LABEL)
        n = int(instances.max())
        assert sorted(np.unique(instances)) == list(range(n + 1)), seed
        for k in range(1, n + 1):
            lesion = instances == k
            assert lesion.sum() >= MIN_LESION_VOXELS
            _, components = ndimage.label(lesion, FULL_26)
            assert components == 1, (seed, k)
            (host,) = np.unique(plain_labels[lesion])  # one organ, before the lesion was painted
            assert host in HOSTS, (seed, k, host)
            # Fully inside, with a margin: the lesion's face neighbours are organ (or lesion) too.
            assert ndimage.binary_erosion(plain_labels == host)[lesion].all(), (seed, k)
        # Separated: every 26-connected component of all lesions together is exactly one instance.
        components, count = ndimage.label(instances > 0, FULL_26)
        assert count == n, seed
        for c in range(1, count + 1):
            assert len(np.unique(instances[components == c])) == 1


def test_lesions_are_painted_over_their_organ_only(cases):
    for _, (_, labels, instances), (_, plain_labels) in cases.values():
        outside = instances == 0
        np.testing.assert_array_equal(labels[outside], plain_labels[outside])


def test_case_labels_agree_with_the_lesions(cases):
    for seed, (case, (image, labels, instances), _) in cases.items():
        n = int(instances.max())
        assert case.case_labels["lesion_count"] == ("none", "one", "several")[min(n, 2)], seed
        if n == 0:
            assert case.case_labels["lesion_type"] == "none"
            continue
        # The type is what the image shows: mean HU of each lesion against a ring of its organ around it.
        sign = {"hypodense": -1, "hyperdense": 1}[case.case_labels["lesion_type"]]
        for k in range(1, n + 1):
            lesion = instances == k
            ring = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion, iterations=1)
            ring &= np.isin(labels, list(HOSTS))
            difference = image[lesion].astype(float).mean() - image[ring].astype(float).mean()
            assert sign * difference > 10, (seed, k, difference)


def test_texture_and_noise_stay_inside_lesions(cases):
    """The contrast is added: inside a lesion the image minus the plain phantom is smooth (no new noise)."""
    for seed, (_, (image, _, instances), (plain_image, _)) in cases.items():
        for k in range(1, int(instances.max()) + 1):
            core = ndimage.binary_erosion(instances == k)
            if core.sum() < 3:
                continue
            added = image[core].astype(float) - plain_image[core]
            assert abs(added.mean()) > 25 and added.std() < 8, (seed, k, added.mean(), added.std())
            assert image[core].std() > 3  # the organ's texture and noise are still there


def test_image_is_the_plain_phantom_away_from_lesions(cases):
    for case, (image, _, instances), (plain_image, _) in cases.values():
        near = ndimage.binary_dilation(instances > 0, FULL_26, iterations=2)
        np.testing.assert_array_equal(image[~near], plain_image[~near])
        if case.case_labels["lesion_count"] == "none":
            np.testing.assert_array_equal(image, plain_image)


def test_geometry_matches_the_plain_phantom(cases):
    for case, *_ in cases.values():
        for im in case[:3]:
            assert im.GetSize() == (96, 96, 48) and im.GetSpacing() == (3.0, 3.0, 4.0)
            assert im.GetOrigin() == case.image.GetOrigin() and im.GetDirection() == case.image.GetDirection()
        assert case.instances.GetPixelID() == sitk.sitkUInt16 and case.labels.GetPixelID() == sitk.sitkUInt8


def test_same_seed_same_case_and_max_lesions_bounds_the_count():
    a, b = generate_lesion_phantom(5, SMALL), generate_lesion_phantom(5, SMALL)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.case_labels == b.case_labels
    for seed in range(6):
        assert int(sitk.GetArrayFromImage(generate_lesion_phantom(seed, max_lesions=1).instances).max()) <= 1
    none = generate_lesion_phantom(3, SMALL, max_lesions=0)
    assert none.case_labels == {"lesion_count": "none", "lesion_type": "none"}
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(none.image), sitk.GetArrayFromImage(generate_phantom(3, SMALL)[0])
    )


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_max_lesions_is_named(value):
    with pytest.raises(ConfigError, match="max_lesions"):
        generate_lesion_phantom(0, SMALL, max_lesions=value)


def test_written_lesion_dataset_loads_with_its_spec(tmp_path):
    out = write_phantom_dataset(tmp_path / "ds", 3, seed=0, max_lesions=3)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == LESION_PHANTOM_LABELS and meta["labels"]["lesion"] == 6
    assert meta["maskmed_phantom"]["max_lesions"] == 3 and "lesions" in meta["description"]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "instancesTr", "labelsTr"]
    dataset = load_dataset(out)
    spec = dataset.multitask
    assert spec.instance_classes == ("lesion",) and spec.instance_values(dataset.labels) == (LESION_LABEL,)
    assert spec.case_tasks == LESION_CASE_TASKS
    for i, case_id in enumerate(["phantom_000", "phantom_001", "phantom_002"]):
        expected = generate_lesion_phantom(i, max_lesions=3)
        assert dict(spec.case_labels[case_id]) == expected.case_labels
        for folder, name, image in [
            ("imagesTr", f"{case_id}_0000", expected.image),
            ("labelsTr", case_id, expected.labels),
            ("instancesTr", case_id, expected.instances),
        ]:
            written = sitk.ReadImage(str(out / folder / f"{name}.nii.gz"))
            assert written.GetPixelID() == image.GetPixelID()
            np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(image))
    counts = dict(LESION_CASE_TASKS)["lesion_count"]
    targets = spec.case_targets([c.case_id for c in dataset.cases])
    assert [counts[t] for t in targets[:, 0]] == [spec.case_labels[c.case_id]["lesion_count"] for c in dataset.cases]
    assert validate_dataset(dataset) == []


def test_without_lesions_the_dataset_is_unchanged(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", 1, shape=SMALL)
    b = write_phantom_dataset(tmp_path / "b", 1, shape=SMALL, max_lesions=0)
    assert (a / "dataset.json").read_text() == (b / "dataset.json").read_text()
    assert sorted(p.name for p in b.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert "instance_classes" not in json.loads((b / "dataset.json").read_text())
    with pytest.raises(ConfigError, match="max_lesions"):
        write_phantom_dataset(tmp_path / "c", 1, shape=SMALL, max_lesions=-2)
    assert not (tmp_path / "c").exists()


def test_phantom_command_lesions_flag(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["phantom", "--out", str(out), "--cases", "2", "--seed", "1", "--shape", *map(str, SMALL)]
    assert main([*args, "--lesions", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["instance_classes"] == ["lesion"] and meta["maskmed_phantom"]["max_lesions"] == 2
    assert set(meta["case_labels"]["cases"]) == {"phantom_000", "phantom_001"}
    assert (out / "instancesTr" / "phantom_001.nii.gz").is_file()

    assert main(["phantom", "--out", str(tmp_path / "bad"), "--lesions", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lesions" in err[0] and "-1" in err[0]
    assert not (tmp_path / "bad").exists()
