"""Image reading/writing: formats, geometry in (D, H, W), and one clear DataError per bad file."""

import numpy as np
import pytest
import SimpleITK as sitk
from raw_dataset_builders import OBLIQUE, write

from MaskMedCore.data.image_io import (
    ImageFileError,
    atomic_output,
    check_finite,
    file_ending,
    geometry_differences,
    geometry_of,
    image_from_array,
    image_to_array,
    read_image,
    read_image_channels,
    shape_dhw,
    spacing_dhw,
    write_image,
)
from MaskMedCore.errors import DataError

SPACING = (3.0, 0.8, 0.7)  # (D, H, W)


def _image(shape=(5, 6, 7), dtype=np.float32, seed=0):
    array = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    return image_from_array(array, SPACING, (10.0, -5.0, 2.5), OBLIQUE), array


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_then_read_keeps_values_and_geometry(tmp_path, ending):
    image, array = _image()
    path = write_image(image, tmp_path / f"img{ending}")
    back = read_image(path)
    np.testing.assert_array_equal(image_to_array(back), array)
    assert shape_dhw(back) == (5, 6, 7)
    np.testing.assert_allclose(spacing_dhw(back), SPACING, rtol=1e-6)
    assert geometry_differences(geometry_of(image), geometry_of(back), rtol=1e-5) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img{ending}"]  # no temp file left


def test_file_ending_knows_compound_endings():
    assert file_ending("a/case_0000.nii.gz") == ".nii.gz"
    assert file_ending("seg.seg.nrrd") == ".seg.nrrd"
    assert file_ending("x.mha") == ".mha"


def test_single_layer_slicer_segmentation_reads_as_label_map(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 2:4, 1:5] = 2
    image = sitk.GetImageFromArray(labels)
    image.SetMetaData("Segment0_ID", "tumour")
    image.SetMetaData("Segment0_LabelValue", "2")
    sitk.WriteImage(image, str(tmp_path / "case.seg.nrrd"), True)
    np.testing.assert_array_equal(image_to_array(read_image(tmp_path / "case.seg.nrrd")), labels)


def test_multi_layer_slicer_segmentation_is_refused(tmp_path):
    layers = sitk.GetImageFromArray(np.zeros((4, 5, 6, 2), np.uint8), isVector=True)
    sitk.WriteImage(layers, str(tmp_path / "overlap.seg.nrrd"))
    with pytest.raises(DataError, match=r"overlap\.seg\.nrrd.*2 layers"):
        read_image(tmp_path / "overlap.seg.nrrd")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.nii\.gz: file not found"):
        read_image(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_is_corrupt_not_zero_filled(tmp_path, ending):
    image, _ = _image(shape=(20, 20, 20))
    good = write_image(image, tmp_path / f"good{ending}")
    data = good.read_bytes()
    bad = tmp_path / f"bad{ending}"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageFileError, match=rf"bad{ending.replace('.', '[.]')}") as info:
        read_image(bad)
    assert "truncated" in str(info.value) or "corrupt" in str(info.value) or "not" in str(info.value)


def test_junk_file(tmp_path):
    (tmp_path / "junk.nrrd").write_bytes(b"this is not an image" * 10)
    with pytest.raises(DataError, match=r"junk\.nrrd: is not a readable image"):
        read_image(tmp_path / "junk.nrrd")


def test_2d_image_is_read_as_one_slice_with_its_header_geometry(tmp_path):
    flat = sitk.GetImageFromArray(np.arange(72, dtype=np.float32).reshape(8, 9))
    flat.SetSpacing((0.7, 0.8))
    flat.SetOrigin((3.0, -4.0))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    image = read_image(tmp_path / "flat.nii.gz")
    assert shape_dhw(image) == (1, 8, 9)
    assert spacing_dhw(image) == pytest.approx((999.0, 0.8, 0.7))  # nnU-Net's through-plane spacing of 2D images
    assert image.GetOrigin() == pytest.approx((3.0, -4.0, 0.0))
    np.testing.assert_array_equal(image_to_array(image)[0], np.arange(72).reshape(8, 9))


def test_4d_image_is_refused_where_3d_is_needed_and_split_where_channels_are(tmp_path):
    volumes = [np.full((3, 4, 5), float(c), np.float32) for c in range(3)]
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(v) for v in volumes]), str(tmp_path / "mm.nii.gz"))
    with pytest.raises(DataError, match=r"mm\.nii\.gz: is a 4D image with 3 volumes"):
        read_image(tmp_path / "mm.nii.gz")
    channels = read_image_channels(tmp_path / "mm.nii.gz", 3)
    assert [float(image_to_array(c).mean()) for c in channels] == [0.0, 1.0, 2.0]
    assert shape_dhw(channels[0]) == (3, 4, 5)
    with pytest.raises(DataError, match="holds 3 volume.*declares 2 channels"):
        read_image_channels(tmp_path / "mm.nii.gz", 2)


def test_vector_image_is_refused(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(DataError, match=r"rgb\.mha: has 3 components per voxel"):
        read_image(tmp_path / "rgb.mha")


def test_check_finite_counts_nan_and_inf():
    array = np.zeros((2, 3, 4), np.float32)
    check_finite(array, "ok.nii.gz")
    array[0, 0, 0], array[1, 1, 1], array[1, 2, 3] = np.nan, np.inf, -np.inf
    with pytest.raises(DataError, match=r"img\.nii\.gz: has 1 NaN and 2 infinite"):
        check_finite(array, "img.nii.gz")


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    image, _ = _image()
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous good file")
    with pytest.raises(DataError, match="cannot write"):
        write_image(image, tmp_path / "out.unknownformat")
    with pytest.raises(DataError, match="does not exist"):
        write_image(image, tmp_path / "missing_dir" / "x.nii.gz")
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_geometry_differences_name_each_field():
    a = geometry_of(_image()[0])
    b = a._replace(spacing=(3.0, 0.8, 0.75), origin=(10.0, -5.0, 4.0))
    diffs = geometry_differences(a, b)
    assert len(diffs) == 2 and diffs[0].startswith("spacing") and diffs[1].startswith("origin")
    assert geometry_differences(a, a._replace(spacing=(3.0001, 0.8, 0.7))) == []  # within 1e-3 relative


def test_write_helper_round_trip_of_builder(tmp_path):
    path = write(np.ones((2, 3, 4), np.uint8), tmp_path / "l.nrrd", spacing=SPACING)
    assert spacing_dhw(read_image(path)) == pytest.approx(SPACING)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_are_reported_in_every_format(tmp_path, ending, dtype):
    # ITK's NIfTI reader turns NaN/Inf into 0 without a word; read_image must still refuse them.
    array = np.ones((6, 7, 8), dtype)
    array[1, 2, 3], array[2, 2, 2], array[5, 6, 7] = np.nan, np.nan, -np.inf
    path = write(array, tmp_path / f"bad{ending}")
    with pytest.raises(DataError, match=rf"bad{ending.replace('.', '[.]')}: has 2 NaN and 1 infinite"):
        read_image(path)


def test_multi_member_gzip_nifti_is_read_whole(tmp_path):
    import gzip

    array = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    raw = write(array, tmp_path / "one.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    np.testing.assert_array_equal(image_to_array(read_image(tmp_path / "two.nii.gz")), array)


def test_atomic_output_keeps_the_ending_and_cleans_up_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), atomic_output(tmp_path / "case.seg.nrrd") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".seg.nrrd") and tmp.name.startswith(".case.")
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
