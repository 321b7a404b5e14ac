"""Volume node <-> file with full geometry (oblique, anisotropic) on real slicer-core MRML."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
from MaskMedSlicerLib import MaskMedSlicerError, export_volume, volume_node_from_file  # noqa: E402
from MaskMedSlicerLib.volume_io import geometry_from_lps, geometry_to_lps, ijk_to_ras  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".nii"])
def test_round_trip_keeps_geometry_and_voxels(scene, tmp_path, ending):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(5, 7, 9)).astype(np.int16)  # (D, H, W) = (K, J, I)
    matrix = oblique_ijk_to_ras()
    node = add_volume(scene, array, matrix, "oblique")

    path = export_volume(node, tmp_path / f"oblique{ending}")
    back = volume_node_from_file(path, scene, "back")

    assert back.GetImageData().GetDimensions() == (9, 7, 5)
    np.testing.assert_allclose(back.GetSpacing(), (0.7, 1.3, 2.9), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), (10.0, -20.0, 30.0), atol=1e-4)
    np.testing.assert_allclose(ijk_to_ras(back), matrix, atol=1e-5)  # NIfTI stores float32
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array)
    assert slicer.util.arrayFromVolume(back).dtype == np.int16
    assert back.GetName() == "back" and back.GetDisplayNode() is not None
    assert not list(tmp_path.glob(".*tmp*")), "no temp file may be left behind"


def test_exported_file_has_lps_geometry(scene, tmp_path):
    matrix = oblique_ijk_to_ras(spacing=(0.5, 0.8, 3.0), origin=(-4.0, 12.5, 7.0))
    node = add_volume(scene, np.zeros((4, 5, 6), np.float32), matrix)
    image = sitk.ReadImage(str(export_volume(node, tmp_path / "v.nrrd")))

    direction_ras = matrix[:3, :3] / np.array([0.5, 0.8, 3.0])
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS
    assert image.GetSize() == (6, 5, 4)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.8, 3.0), rtol=1e-12)
    np.testing.assert_allclose(image.GetOrigin(), (4.0, -12.5, 7.0), atol=1e-12)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), flip @ direction_ras, atol=1e-12)
    # The physical point of voxel (i, j, k) is the LPS image of IJKToRAS @ (i, j, k).
    ras = matrix @ np.array([5, 4, 3, 1.0])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((5, 4, 3)), flip @ ras[:3], atol=1e-9)


def test_geometry_helpers_are_inverse():
    matrix = oblique_ijk_to_ras()
    np.testing.assert_allclose(geometry_from_lps(*geometry_to_lps(matrix)), matrix, atol=1e-12)


def test_export_rejects_vector_volume_and_missing_folder(scene, tmp_path):
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour photo")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(MaskMedSlicerError, match="colour photo.*3 components"):
        export_volume(rgb, tmp_path / "x.nii.gz")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(MaskMedSlicerError, match="'empty'.*no voxels"):
        export_volume(empty, tmp_path / "x.nii.gz")
    node = add_volume(scene, np.zeros((2, 2, 2), np.int16), np.eye(4))
    with pytest.raises(MaskMedSlicerError, match="does not exist"):
        export_volume(node, tmp_path / "missing" / "x.nii.gz")
    with pytest.raises(MaskMedSlicerError, match="unsupported image file ending"):
        export_volume(node, tmp_path / "x.png")


def test_unreadable_file_adds_no_node(scene, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match="broken.nii.gz"):
        volume_node_from_file(bad, scene, "x")
    assert node_count(scene) == before
