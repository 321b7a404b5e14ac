"""2D images (PNG, BMP, JPEG, TIFF, DICOM frames) as single-slice volumes: reading, colour channels, labels,
writing, datasets and ``maskmed predict`` (issue 13). Every file is a real one written by SimpleITK (or Pillow
for the layouts SimpleITK does not write); the datasets are slices of real MSD hippocampus MRI.
"""

import json
import locale
import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.cli import main
from MaskMedCore.data.dataset import load_dataset
from MaskMedCore.data.image_io import (
    ImageFileError,
    image_to_array,
    input_geometry_2d,
    read_image,
    read_image_channels,
    read_label,
    shape_dhw,
    spacing_dhw,
    write_image,
)
from MaskMedCore.data.natural_images import THROUGH_PLANE_SPACING, output_endings
from MaskMedCore.data.validate import read_case, validate_dataset
from MaskMedCore.errors import DataError

LABELS = {"background": 0, "anterior": 1, "posterior": 2}
RGB_NAMES = {"0": "R", "1": "G", "2": "B"}
NUM_CASES = 4


def _pattern(shape=(10, 12), seed=0) -> np.ndarray:
    """A (H, W) uint8 image with distinct values (so flips and transposes show)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def _write_2d(array: np.ndarray, path: Path, spacing=(1.0, 1.0), vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _write_dicom_frame(array: np.ndarray, path: Path, pixel_spacing=(0.6, 0.7), origin=(-10.0, 20.0, 30.0)) -> Path:
    """A single-frame CT DICOM written by SimpleITK with PixelSpacing (row, column) and a patient position."""
    image = sitk.GetImageFromArray(array[None].astype(np.int16))
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], 1.0))
    image.SetOrigin(origin)
    tags = {
        "0008|0060": "CT",
        "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "0028|0030": f"{pixel_spacing[0]}\\{pixel_spacing[1]}",
        "0020|0032": "\\".join(str(v) for v in origin),
        "0020|0037": "1\\0\\0\\0\\1\\0",
    }
    for key, value in tags.items():
        image.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    # GDCM's DICOM writer sets the process's C locale to "C": every later text read or subprocess pipe in this
    # test session would decode as ASCII. (Reading DICOM, all MaskMed does, leaves the locale alone.)
    saved = locale.setlocale(locale.LC_ALL)
    try:
        writer.Execute(image)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return path


def _dataset_json(root: Path, ending: str, channel_names: dict) -> None:
    meta = {"channel_names": channel_names, "labels": LABELS, "numTraining": NUM_CASES, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))


# ---------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("ending", [".png", ".bmp", ".jpg", ".tif"])
def test_grey_2d_file_reads_as_one_slice(tmp_path, ending):
    array = _pattern()
    path = _write_2d(array, tmp_path / f"img{ending}", spacing=(0.5, 0.25))
    image = read_image(path)
    assert image.GetDimension() == 3 and shape_dhw(image) == (1, 10, 12)
    values = image_to_array(image)[0].astype(np.int16)
    if ending == ".jpg":  # lossy: close, not equal
        assert np.abs(values - array).mean() < 8
    else:
        np.testing.assert_array_equal(values, array)
    # PNG/BMP/JPEG: 1 mm pixels whatever the file's print resolution; TIFF: its resolution tags.
    expected = (0.25, 0.5) if ending == ".tif" else (1.0, 1.0)
    assert spacing_dhw(image) == pytest.approx((THROUGH_PLANE_SPACING, *expected), rel=1e-6)
    assert image.GetOrigin() == (0.0, 0.0, 0.0)


def test_stored_print_resolution_is_ignored_but_kept_for_writing(tmp_path):
    path = _write_2d(_pattern(), tmp_path / "phys.png", spacing=(0.5, 0.25))  # SimpleITK writes it as pHYs
    assert sitk.ReadImage(str(path)).GetSpacing() == pytest.approx((0.5, 0.25))
    assert spacing_dhw(read_image(path))[1:] == (1.0, 1.0)
    geometry = input_geometry_2d(path)
    assert geometry.size == (12, 10) and geometry.spacing == pytest.approx((0.5, 0.25))
    assert input_geometry_2d(_write_dicom_frame(_pattern(), tmp_path / "f.dcm")) is None  # DICOM: read as 3D


def test_jpeg_dots_per_inch_are_not_pixel_sizes(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    path = tmp_path / "photo.jpg"
    image_module.fromarray(_pattern()).save(path, dpi=(300, 300))
    assert sitk.ReadImage(str(path)).GetSpacing()[0] == pytest.approx(25.4 / 300)  # what ITK would use
    assert spacing_dhw(read_image(path)) == (THROUGH_PLANE_SPACING, 1.0, 1.0)


def test_dicom_frame_carries_pixel_spacing_and_position(tmp_path):
    array = _pattern().astype(np.int16) * 10 - 300
    path = _write_dicom_frame(array, tmp_path / "frame.dcm", pixel_spacing=(0.6, 0.7))
    encoding = locale.getpreferredencoding(False)
    image = read_image(path)
    assert locale.getpreferredencoding(False) == encoding  # reading DICOM keeps the process's text encoding
    assert shape_dhw(image) == (1, 10, 12)
    assert spacing_dhw(image)[1:] == pytest.approx((0.6, 0.7))  # PixelSpacing is (row, column) = (H, W)
    assert image.GetOrigin() == pytest.approx((-10.0, 20.0, 30.0))
    np.testing.assert_array_equal(image_to_array(image)[0], array)


def test_3d_file_with_one_slice_keeps_its_own_geometry(tmp_path):
    volume = sitk.GetImageFromArray(_pattern()[None])
    volume.SetSpacing((0.9, 0.8, 2.5))
    volume.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(volume, str(tmp_path / "slice.nii.gz"))
    image = read_image(tmp_path / "slice.nii.gz")
    assert shape_dhw(image) == (1, 10, 12)
    assert spacing_dhw(image) == pytest.approx((2.5, 0.8, 0.9))
    assert image.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))


# ---------------------------------------------------------------------------------------------- colour
@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_rgb_pixels_are_three_channels(tmp_path, ending):
    r, g, b = _pattern(seed=1), _pattern(seed=2), _pattern(seed=3)
    path = _write_2d(np.stack([r, g, b], -1), tmp_path / f"rgb{ending}", vector=True)
    channels = read_image_channels(path, 3)
    assert [shape_dhw(c) for c in channels] == [(1, 10, 12)] * 3
    for channel, expected in zip(channels, (r, g, b)):
        np.testing.assert_array_equal(image_to_array(channel)[0], expected)


def test_rgba_drops_alpha_and_grey_stored_as_rgb_stays_three_channels(tmp_path):
    grey = _pattern()
    rgba = _write_2d(np.stack([grey, grey // 2, grey // 3, np.full_like(grey, 7)], -1), tmp_path / "a.png", vector=True)
    channels = read_image_channels(rgba, 3)
    np.testing.assert_array_equal(image_to_array(channels[2])[0], grey // 3)
    with pytest.raises(ImageFileError, match=r"RGBA colour image \(3 channels; alpha \(transparency\) channel dropped"):
        read_image_channels(rgba, 4)
    same = _write_2d(np.stack([grey] * 3, -1), tmp_path / "grey_as_rgb.png", vector=True)  # not a palette image
    assert len(read_image_channels(same, 3)) == 3
    with pytest.raises(ImageFileError, match="RGB colour image"):
        read_image(same)


def test_grey_palette_images_are_one_channel(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    grey = _pattern()
    bmp = _write_2d(grey, tmp_path / "grey.bmp")  # SimpleITK writes an 8-bit palette BMP; ITK reads it as RGB
    assert sitk.ReadImage(str(bmp)).GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(image_to_array(read_image(bmp))[0], grey)
    palette_png = image_module.fromarray(grey % 3).convert("P")
    palette_png.putpalette([v for i in range(256) for v in (i, i, i)])
    palette_png.save(tmp_path / "grey_palette.png")
    np.testing.assert_array_equal(image_to_array(read_label(tmp_path / "grey_palette.png"))[0], grey % 3)


def test_grey_png_with_alpha_gives_a_clear_error(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    grey = _pattern()
    image_module.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(tmp_path / "la.png")
    with pytest.raises(ImageFileError, match=r"la\.png: is a grey PNG with an alpha .* save it without the alpha"):
        read_image(tmp_path / "la.png")


def test_channel_count_mismatch_is_one_error_naming_file_found_expected_and_fix(tmp_path):
    rgb = _write_2d(np.stack([_pattern()] * 3, -1), tmp_path / "case_0000.png", vector=True)
    grey = _write_2d(_pattern(), tmp_path / "grey_0000.png")
    with pytest.raises(ImageFileError) as info:
        read_image_channels(rgb, 1)
    assert str(info.value).startswith(f"{rgb}: is an RGB colour image (3 channels) but dataset.json expects 1 channel")
    assert '"0": "R", "1": "G", "2": "B"' in info.value.fix
    with pytest.raises(
        ImageFileError, match=r"grey-value image \(1 channel\) but dataset.json expects 3 channels"
    ) as e:
        read_image_channels(grey, 3)
    assert "colour image with 3 channels" in e.value.fix and "<case>_0001" in e.value.fix
    with pytest.raises(ImageFileError, match=r"but the model expects 1 channel.*use a model trained on colour"):
        read_image_channels(rgb, 1, expected_by="the model")


# ---------------------------------------------------------------------------------------------- labels
def test_labels_must_be_lossless_and_grey(tmp_path):
    labels = (_pattern() % 3).astype(np.uint8)
    jpeg = _write_2d(labels, tmp_path / "case.jpg")
    with pytest.raises(ImageFileError, match=r"case\.jpg: is a JPEG file: JPEG compression is lossy") as info:
        read_label(jpeg)
    assert "case.png" in info.value.fix
    colour = _write_2d(np.stack([labels * 80] * 3, -1), tmp_path / "colour.png", vector=True)
    with pytest.raises(ImageFileError, match=r"colour\.png: is an RGB colour image; a label map holds one integer"):
        read_label(colour)
    np.testing.assert_array_equal(image_to_array(read_label(_write_2d(labels, tmp_path / "ok.png")))[0], labels)


# ---------------------------------------------------------------------------------------------- writing
def _single_slice(array: np.ndarray, spacing=(999.0, 0.8, 0.6)) -> sitk.Image:
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing(tuple(reversed(spacing)))
    return image


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_label_maps_are_written_as_2d_files_that_read_back_equal(tmp_path, ending):
    labels = (_pattern() % 5).astype(np.uint8)
    path = write_image(_single_slice(labels), tmp_path / f"pred{ending}")
    raw = sitk.ReadImage(str(path))
    assert raw.GetDimension() == 2 and raw.GetPixelID() in (sitk.sitkUInt8, sitk.sitkVectorUInt8)
    np.testing.assert_array_equal(image_to_array(read_label(path))[0], labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pred{ending}"]  # no temp file left


def test_pixel_type_follows_the_values_and_the_format(tmp_path):
    ids = np.arange(120, dtype=np.uint16).reshape(10, 12) * 500  # up to 59500: needs 16 bits
    png = write_image(_single_slice(ids), tmp_path / "ids.png")
    assert sitk.ReadImage(str(png)).GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(image_to_array(read_image(png))[0], ids)
    small = write_image(_single_slice(np.ones((10, 12), np.uint16)), tmp_path / "small.png")
    assert sitk.ReadImage(str(small)).GetPixelID() == sitk.sitkUInt8
    with pytest.raises(DataError, match=r"ids\.bmp: values 0\.\.59500 do not fit \.bmp \(0\.\.255\); use \.png"):
        write_image(_single_slice(ids), tmp_path / "ids.bmp")
    probs = _single_slice(np.linspace(0, 1, 120, dtype=np.float32).reshape(10, 12))
    with pytest.raises(DataError, match=r"prob\.png: it holds floating-point values.*use \.tif"):
        write_image(probs, tmp_path / "prob.png")
    tif = write_image(probs, tmp_path / "prob.tif")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tif))), image_to_array(probs)[0])
    with pytest.raises(DataError, match=r"x\.jpg: JPEG compression is lossy.*write \.png"):
        write_image(_single_slice(ids), tmp_path / "x.jpg")
    with pytest.raises(DataError, match=r"vol\.png: a volume of 3 slices .* use \.nii\.gz"):
        write_image(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8)), tmp_path / "vol.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.png", "prob.tif", "small.png"]


def test_predict_lists_every_2d_ending():
    from MaskMedCore.commands.predict import IMAGE_ENDINGS
    from MaskMedCore.data.natural_images import PACKED_CHANNEL_ENDINGS

    assert set(PACKED_CHANNEL_ENDINGS) <= set(IMAGE_ENDINGS)


def test_output_endings_table():
    assert output_endings(".png")[:2] == (".png", ".tif")
    assert output_endings(".bmp")[:2] == (".bmp", ".tif")
    assert output_endings(".tif")[:2] == (".tif", ".tif")
    assert output_endings(".jpg").labels == ".png" and "lossy" in output_endings(".jpg").labels_reason
    assert output_endings(".dcm").labels == ".nii.gz" and "spacing, origin" in output_endings(".dcm").labels_reason
    assert output_endings(".nii.gz") == (".nii.gz", ".nii.gz", "", "")
    assert output_endings(".seg.nrrd").labels == ".nii.gz"


# ---------------------------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def hippocampus_slices():
    """(image uint8 (H, W), label uint8 (H, W)) of 4 real MSD hippocampus cases (CC-BY-SA 4.0): the axial
    slice with the most foreground, rescaled to 0..255."""
    shared = Path(
        os.environ.get("MASKMED_SHARED_DATA") or Path(__file__).resolve().parents[4].parent / "shared" / "data"
    )
    source = shared / "msd_hippocampus"  # as the root conftest's shared_data (function-scoped, so not usable here)
    if not source.is_dir():
        pytest.skip(f"real test data not found at {source} (set MASKMED_SHARED_DATA to its folder)")
    out = {}
    for path in sorted((source / "imagesTr").glob("*.nii.gz"))[:NUM_CASES]:
        case = path.name[: -len(".nii.gz")]
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / path.name)))
        z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
        s = volume[z]
        out[case] = (np.round(255 * (s - s.min()) / (s.max() - s.min())).astype(np.uint8), labels[z].astype(np.uint8))
    return out


def _colour(grey: np.ndarray) -> np.ndarray:
    """(H, W, 3): R = the slice, G = its negative, B = half of it."""
    return np.stack([grey, 255 - grey, grey // 2], -1)


def _write_dataset(root: Path, slices: dict, ending: str, rgb: bool = False, channel_names=None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label_ending = ".png" if ending == ".jpg" else ending
    for case, (image, labels) in slices.items():
        target = root / "imagesTr" / f"{case}_0000{ending}"
        if ending == ".dcm":
            _write_dicom_frame(image, target, pixel_spacing=(0.6, 0.7))
            _write_dicom_frame(labels, root / "labelsTr" / f"{case}.dcm", pixel_spacing=(0.6, 0.7))
            continue
        _write_2d(_colour(image) if rgb else image, target, vector=rgb)
        _write_2d(labels, root / "labelsTr" / f"{case}{label_ending}")
    _dataset_json(root, ending, channel_names or (RGB_NAMES if rgb else {"0": "MRI"}))
    return root


@pytest.mark.realdata
@pytest.mark.parametrize(
    "ending, rgb",
    [(".png", False), (".bmp", False), (".jpg", False), (".tif", False), (".dcm", False)]
    + [(".png", True), (".bmp", True), (".jpg", True), (".tif", True)],
)
def test_datasets_of_2d_files_validate_and_read_as_single_slices(tmp_path, hippocampus_slices, ending, rgb):
    root = _write_dataset(tmp_path / "ds", hippocampus_slices, ending, rgb)
    dataset = load_dataset(root)
    assert len(dataset.cases) == NUM_CASES and dataset.num_channels == (3 if rgb else 1)
    assert all(case.packed_channels == rgb for case in dataset.cases)
    assert all(case.label_path.name.endswith(".png" if ending == ".jpg" else ending) for case in dataset.cases)
    assert validate_dataset(dataset) == []
    case = dataset.cases[0]
    images, label = read_case(dataset, case)
    image, labels = hippocampus_slices[case.case_id]
    assert [shape_dhw(i) for i in images] == [(1, *image.shape)] * dataset.num_channels
    np.testing.assert_array_equal(image_to_array(label)[0], labels)
    expected = _colour(image).transpose(2, 0, 1) if rgb else image[None]
    got = np.stack([image_to_array(i)[0] for i in images]).astype(np.int16)
    if ending == ".jpg":  # lossy, colour chroma-subsampled: close (a swapped channel would be ~50 off)
        assert np.abs(got - expected).mean() < 16
    else:
        np.testing.assert_array_equal(got, expected)
    in_plane = (0.6, 0.7) if ending == ".dcm" else (1.0, 1.0)
    assert spacing_dhw(images[0])[1:] == pytest.approx(in_plane)
    assert spacing_dhw(images[0])[0] == (1.0 if ending == ".dcm" else THROUGH_PLANE_SPACING)
    assert main(["validate-dataset", str(root)]) == 0


@pytest.mark.realdata
def test_channel_mismatch_is_one_problem_per_case(tmp_path, hippocampus_slices):
    rgb_as_grey = load_dataset(
        _write_dataset(tmp_path / "a", hippocampus_slices, ".png", rgb=True, channel_names={"0": "MRI"})
    )
    problems = validate_dataset(rgb_as_grey)
    assert [p.case_id for p in problems] == [c.case_id for c in rgb_as_grey.cases]
    first = rgb_as_grey.cases[0].case_id
    assert problems[0].message == (
        f"imagesTr/{first}_0000.png: is an RGB colour image (3 channels) but dataset.json expects 1 channel in "
        "this file"
    )
    assert "channel_names" in problems[0].fix
    grey_as_rgb = load_dataset(_write_dataset(tmp_path / "b", hippocampus_slices, ".png", channel_names=RGB_NAMES))
    problems = validate_dataset(grey_as_rgb)
    assert len(problems) == NUM_CASES
    assert all(re.search(r"_0000\.png: is a grey-value image \(1 channel\) but dataset.json expects 3", p.message)
               for p in problems)  # fmt: skip
    with pytest.raises(DataError, match=rf"case {first}: imagesTr/{first}_0000\.png: is a grey-value image"):
        read_case(grey_as_rgb, grey_as_rgb.cases[0])


@pytest.mark.realdata
def test_channels_as_separate_grey_files_still_work(tmp_path, hippocampus_slices):
    root = _write_dataset(tmp_path / "ds", hippocampus_slices, ".png", rgb=True)
    for path in sorted((root / "imagesTr").glob("*_0000.png")):
        rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        for c in range(3):
            _write_2d(rgb[..., c], path.with_name(path.name.replace("_0000", f"_{c:04d}")))
    dataset = load_dataset(root)
    assert not any(case.packed_channels for case in dataset.cases)
    assert validate_dataset(dataset) == []


@pytest.mark.realdata
def test_jpeg_label_and_colour_label_are_refused_by_name(tmp_path, hippocampus_slices):
    root = _write_dataset(tmp_path / "ds", hippocampus_slices, ".jpg")
    cases = sorted(hippocampus_slices)
    (root / "labelsTr" / f"{cases[0]}.png").rename(root / "labelsTr" / f"{cases[0]}.jpg")
    _write_2d(_colour(hippocampus_slices[cases[1]][1] * 100), root / "labelsTr" / f"{cases[1]}.png", vector=True)
    problems = validate_dataset(load_dataset(root))
    assert [p.case_id for p in problems] == cases[:2]
    assert problems[0].message == (
        f"labelsTr/{cases[0]}.jpg: is a JPEG file: JPEG compression is lossy and changes label values near every "
        "region border"
    )
    assert problems[0].fix == f"save the label map losslessly as PNG ({cases[0]}.png)"
    assert "is an RGB colour image; a label map holds one integer label value per pixel" in problems[1].message
    assert main(["validate-dataset", str(root)]) == 1


@pytest.mark.realdata
def test_3d_plan_of_single_slice_images_never_pools_or_convolves_along_d(tmp_path, hippocampus_slices):
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import plan_dataset

    dataset = load_dataset(_write_dataset(tmp_path / "ds", hippocampus_slices, ".png", rgb=True))
    fingerprint = compute_fingerprint(dataset, num_samples=1000)
    assert {tuple(c["spacing"]) for c in fingerprint["cases"]} == {(THROUGH_PLANE_SPACING, 1.0, 1.0)}
    for configuration in ("3d_fullres", "3d_cpu"):
        plan = plan_dataset(dataset, fingerprint, configuration=configuration)
        assert plan.target_spacing[0] == THROUGH_PLANE_SPACING and plan.patch_size[0] == 1
        assert all(stride[0] == 1 for stride in plan.strides)
        assert all(kernel[0] == 1 for kernel in plan.kernel_sizes[:-1])  # the bottleneck's 3 pads to one slice
        assert len(plan.strides) >= 3 and plan.channel_names == ("R", "G", "B")


# ---------------------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory, hippocampus_slices):
    """A barely trained 3-channel (R, G, B) model from an RGB PNG dataset (tiny preset, 2 iterations, CPU)."""
    root = tmp_path_factory.mktemp("rgb_model")
    raw = _write_dataset(root / "raw", hippocampus_slices, ".png", rgb=True)
    argv = ["train", str(raw), "--out", str(root / "run"), "--preset", "tiny", "--device", "cpu", "--workers", "0"]
    argv += ["--preprocessed", str(root / "prep"), "--fold", "all", "--epochs", "1", "--iterations-per-epoch", "2"]
    argv += ["--configuration", "3d_fullres", "--progress", "none", "--seed", "0"]
    assert main(argv) == 0
    return root / "run"


def _read_2d(path: Path) -> sitk.Image:
    image = sitk.ReadImage(str(path))
    assert image.GetDimension() == 2, path
    return image


@pytest.mark.realdata
def test_predict_writes_each_2d_input_in_a_lossless_format_with_its_geometry(tmp_path, rgb_model, hippocampus_slices):
    grey, _ = next(iter(hippocampus_slices.values()))
    colour = _colour(grey)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_2d(colour, inputs / "photo_0000.png", spacing=(0.5, 0.25), vector=True)  # pHYs kept in the output
    _write_2d(colour, inputs / "scan_0000.bmp", vector=True)
    _write_2d(colour, inputs / "micro_0000.tif", spacing=(0.3, 0.4), vector=True)
    _write_2d(colour, inputs / "camera_0000.jpg", vector=True)
    for c in range(3):  # channels as separate DICOM frames
        _write_dicom_frame(colour[..., c], inputs / f"xray_{c:04d}.dcm", pixel_spacing=(0.6, 0.7))
    out = tmp_path / "out"
    argv = ["predict", "-m", str(rgb_model), "-i", str(inputs), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--save-queries", "--progress", "none"]) == 0

    H, W = grey.shape
    for case, ending, spacing in [("photo", ".png", (0.5, 0.25)), ("scan", ".bmp", (1.0, 1.0)),
                                  ("micro", ".tif", (0.3, 0.4)), ("camera", ".png", (1.0, 1.0))]:  # fmt: skip
        labels = _read_2d(out / f"{case}{ending}")
        assert labels.GetSize() == (W, H) and labels.GetNumberOfComponentsPerPixel() in (1, 3)
        assert labels.GetSpacing() == pytest.approx(spacing, rel=1e-6)
        array = image_to_array(read_label(out / f"{case}{ending}"))[0]
        assert set(np.unique(array).tolist()) <= {0, 1, 2}
        summary = json.loads((out / f"{case}_summary.json").read_text())
        areas = {name: float((array == k).sum()) * spacing[0] * spacing[1] for k, name in enumerate(LABELS) if k}
        assert summary["class_areas_mm2"] == pytest.approx(areas)
        maps = sorted((out / f"{case}_queries").iterdir())
        assert maps and all(m.suffix == ".tif" for m in maps)
        assert _read_2d(maps[0]).GetPixelID() == sitk.sitkFloat32 and _read_2d(maps[0]).GetSize() == (W, H)
    assert not (out / "camera.jpg").exists()
    camera = json.loads((out / "camera_summary.json").read_text())["output_endings"]
    assert camera["input"] == ".jpg" and camera["labels"]["ending"] == ".png" and "lossy" in camera["labels"]["reason"]
    assert "output_endings" not in json.loads((out / "micro_summary.json").read_text())

    xray = sitk.ReadImage(str(out / "xray.nii.gz"))  # DICOM: .nii.gz keeps the frame's geometry
    frame = sitk.ReadImage(str(inputs / "xray_0000.dcm"))
    assert xray.GetSize() == frame.GetSize() == (W, H, 1)
    assert xray.GetSpacing() == pytest.approx(frame.GetSpacing()) and xray.GetOrigin() == pytest.approx(
        frame.GetOrigin()
    )
    note = json.loads((out / "xray_summary.json").read_text())["output_endings"]
    assert note["labels"]["ending"] == ".nii.gz" and "DICOM" in note["labels"]["reason"]


@pytest.mark.realdata
def test_predict_refuses_a_grey_image_for_a_colour_model_with_one_line(tmp_path, rgb_model, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_2d(_pattern((20, 24)), inputs / "grey.png")
    argv = ["predict", "-m", str(rgb_model), "-i", str(inputs), "-o", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*argv, "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"case grey: error: .*grey\.png: is a grey-value image \(1 channel\) but the model \(channels \['R', 'G', "
        r"'B'\]\) expects 3 channels in this file; save it as a colour image",
        err,
    ), err
