"""The synthetic CT phantom: reproducibility, anatomy, intensities, geometry, the written dataset, the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MaskMedCore.cli import main
from MaskMedCore.data.phantom import (
    DEFAULT_PHANTOM_SHAPE,
    DEFAULT_PHANTOM_SPACING,
    PHANTOM_HU_RANGES,
    PHANTOM_LABELS,
    generate_phantom,
    write_phantom_dataset,
)
from MaskMedCore.errors import ConfigError, MaskMedError

ORGANS = [name for name in PHANTOM_LABELS if name != "background"]
SMALL = (16, 32, 32)
# Plausible organ volumes (ml) at the default shape and spacing (an adult upper abdomen).
VOLUME_ML = {"liver": (600, 2200), "spleen": (50, 400), "kidney_left": (40, 250), "kidney_right": (40, 250)}
VOLUME_ML["aorta"] = (15, 120)


@pytest.fixture(scope="module")
def cases():
    """Three default-size phantoms as (image (D, H, W) int16, labels (D, H, W) uint8, image, labels)."""
    out = []
    for seed in range(3):
        image, labels = generate_phantom(seed)
        out.append((sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), image, labels))
    return out


def _arrays(seed, shape=SMALL):
    image, labels = generate_phantom(seed, shape)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)


def test_same_seed_gives_identical_case():
    (a1, l1), (a2, l2) = _arrays(11), _arrays(11)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(l1, l2)


def test_different_seeds_differ_in_shape_and_position(cases):
    (_, l0, *_), (_, l1, *_) = cases[0], cases[1]
    assert (l0 != l1).mean() > 0.005
    for name in ORGANS:
        value = PHANTOM_LABELS[name]
        m0, m1 = l0 == value, l1 == value
        shift = np.linalg.norm(np.array(ndimage.center_of_mass(m0)) - np.array(ndimage.center_of_mass(m1)))
        volume_change = abs(int(m0.sum()) - int(m1.sum())) / m0.sum()
        assert shift > 0.3 or volume_change > 0.03, name


def test_arrays_types_and_value_ranges(cases):
    for arr, lab, *_ in cases:
        assert arr.shape == lab.shape == DEFAULT_PHANTOM_SHAPE
        assert arr.dtype == np.int16 and lab.dtype == np.uint8
        assert set(np.unique(lab)) == set(PHANTOM_LABELS.values())
        assert arr.min() >= -1024 and arr.max() <= 3071


@pytest.mark.parametrize("name", ORGANS)
def test_organ_volume_is_plausible(cases, name):
    voxel_ml = float(np.prod(DEFAULT_PHANTOM_SPACING)) / 1000.0
    lo, hi = VOLUME_ML[name]
    for _, lab, *_ in cases:
        volume = (lab == PHANTOM_LABELS[name]).sum() * voxel_ml
        assert lo < volume < hi, f"{name}: {volume:.0f} ml"


@pytest.mark.parametrize("name", ORGANS)
def test_organ_hu_inside_documented_range(cases, name):
    lo, hi = PHANTOM_HU_RANGES[name]
    for arr, lab, *_ in cases:
        core = ndimage.binary_erosion(lab == PHANTOM_LABELS[name], np.ones((1, 3, 3), bool))  # away from the boundary
        assert core.sum() > 50
        assert lo <= np.median(arr[core]) <= hi


def test_air_body_and_bone_intensities(cases):
    for arr, lab, *_ in cases:
        assert abs(np.median(arr[:, :3, :]) + 1000) < 30  # anterior-most rows are air
        assert abs(np.median(arr[:, :, :3]) + 1000) < 30  # patient's right edge is air
        body = arr > -500
        assert 0.3 < body.mean() < 0.8
        fat = ((arr > -160) & (arr < -40)).sum() / body.sum()
        soft = ((arr > 0) & (arr < 200)).sum() / body.sum()
        bone = (arr > 400).sum() / body.sum()
        assert fat > 0.08 and soft > 0.3 and 0.002 < bone < 0.06
        assert (lab[~body] == 0).all()


def test_anatomy_follows_the_documented_orientation(cases):
    """Index D points superior, H posterior, W to the patient's left (radiological display)."""
    for _, lab, *_ in cases:
        c = {n: np.array(ndimage.center_of_mass(lab == v)) for n, v in PHANTOM_LABELS.items() if v}
        D, H, W = lab.shape
        assert c["liver"][2] < W / 2 < c["spleen"][2]
        assert c["kidney_right"][2] < W / 2 < c["kidney_left"][2]
        assert c["kidney_left"][1] > H / 2 and c["kidney_right"][1] > H / 2
        assert c["aorta"][1] < min(c["kidney_left"][1], c["kidney_right"][1])
        assert c["liver"][0] > c["kidney_right"][0]  # liver lies above the right kidney


def test_image_and_labels_share_geometry(cases):
    for _, _, image, labels in cases:
        assert image.GetSize() == labels.GetSize() == tuple(reversed(DEFAULT_PHANTOM_SHAPE))
        assert image.GetSpacing() == labels.GetSpacing() == tuple(reversed(DEFAULT_PHANTOM_SPACING))
        assert image.GetOrigin() == labels.GetOrigin()
        assert image.GetDirection() == labels.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
        np.testing.assert_allclose(centre, 0.0, atol=1e-6)


def test_other_shapes_keep_every_organ():
    for shape, spacing in [(SMALL, (4.0, 3.0, 3.0)), ((20, 40, 56), (2.5, 1.5, 2.0))]:
        image, labels = generate_phantom(4, shape, spacing)
        assert image.GetSize() == tuple(reversed(shape))
        assert image.GetSpacing() == tuple(reversed(spacing))
        assert set(np.unique(sitk.GetArrayFromImage(labels))) == set(PHANTOM_LABELS.values())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "shape": (15, 32, 32)}, "shape"),
        ({"seed": 0, "shape": (32, 32)}, "shape"),
        ({"seed": 0, "shape": (16, 32.5, 32)}, "shape"),
        ({"seed": 0, "spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"seed": 0, "spacing": (1.0, float("nan"), 1.0)}, "spacing"),
    ],
)
def test_bad_arguments_are_named(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        generate_phantom(**kwargs)


def test_written_dataset_has_the_nnunet_layout(tmp_path):
    out = write_phantom_dataset(tmp_path / "Dataset900_Phantom", 2, seed=5, shape=SMALL, name="Tiny")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == PHANTOM_LABELS
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz" and meta["name"] == "Tiny"
    assert meta["maskmed_phantom"]["seed"] == 5 and meta["maskmed_phantom"]["shape"] == list(SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "phantom_000_0000.nii.gz",
        "phantom_001_0000.nii.gz",
    ]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    for i in range(2):
        image = sitk.ReadImage(str(out / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz"))
        labels = sitk.ReadImage(str(out / "labelsTr" / f"phantom_{i:03d}.nii.gz"))
        expected_image, expected_labels = _arrays(5 + i)  # case i is seeded seed + i
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected_labels)
        assert labels.GetPixelID() == sitk.sitkUInt8 and image.GetPixelID() == sitk.sitkInt16
        assert image.GetSpacing() == labels.GetSpacing() and image.GetOrigin() == labels.GetOrigin()


def test_written_dataset_passes_the_dataset_validator(tmp_path):
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.validate import validate_dataset

    out = write_phantom_dataset(tmp_path / "ds", 2, shape=SMALL)
    assert validate_dataset(load_dataset(out)) == []


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(MaskMedError, match="not empty"):
        write_phantom_dataset(tmp_path, 1, shape=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(MaskMedError, match="not a folder"):
        write_phantom_dataset(tmp_path / "notes.txt", 1, shape=SMALL)
    with pytest.raises(ConfigError, match="num_cases"):
        write_phantom_dataset(tmp_path / "new", 0, shape=SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_phantom_dataset(empty, 1, shape=SMALL) == empty


def test_phantom_command(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["phantom", "--out", str(out), "--cases", "1", "--seed", "3", "--shape", *map(str, SMALL)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "imagesTr" / "phantom_000_0000.nii.gz").is_file()
    assert json.loads((out / "dataset.json").read_text())["maskmed_phantom"]["seed"] == 3

    assert main(["phantom", "--out", str(out), "--cases", "1", "--shape", *map(str, SMALL)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0]
    assert main(["phantom", "--out", str(tmp_path / "b"), "--cases", "0"]) == 2
    assert "--cases" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "c"), "--shape", "8", "8", "8"]) == 2
    assert "shape" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
