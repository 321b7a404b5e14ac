"""Segment inside a markups ROI (issue 15, "New"): real MRML, real ``maskmed predict`` children.

The reference for the crop is Slicer's own Crop Volume logic (``vtkSlicerCropVolumeLogic.CropVoxelBased``)
and, for "inside the ROI", the ROI node's own ``IsPointInROIWorld``; the reference segmentation is the same
model run on that cropped volume as a volume of its own, and on the whole volume.
"""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import MaskMedLogic, MaskMedSlicerError, SegmentTask, roi_crop  # noqa: E402
from MaskMedSlicerLib.self_test import exported_labels  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402
from world_geometry import add_translation, volume_ijk_to_world  # noqa: E402

CLASSES = ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]


def add_roi(scene, center_world, size, angles=(0.0, 0.0, 0.0), name="ROI"):
    """A markups ROI (box) with the given world centre, size (mm) and rotation (degrees about x, y, z)."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    rotation = vtk.vtkTransform()
    for axis, angle in enumerate(angles):
        rotation.RotateWXYZ(angle, *np.eye(3)[axis])
    orientation = vtk.vtkMatrix4x4()
    orientation.DeepCopy(rotation.GetMatrix())
    roi.SetAndObserveObjectToNodeMatrix(orientation)
    roi.SetCenterWorld(list(center_world))
    roi.SetSize(*size)
    return roi


def inside_roi_world(roi, volume) -> np.ndarray:
    """(D, H, W) bool: voxel centres of ``volume`` inside ``roi``, asked of the ROI node voxel by voxel."""
    D, H, W = slicer.util.arrayFromVolume(volume).shape
    to_world = volume_ijk_to_world(volume)
    inside = np.zeros((D, H, W), bool)
    for k in range(D):
        for j in range(H):
            for i in range(W):
                inside[k, j, i] = roi.IsPointInROIWorld((to_world @ [i, j, k, 1.0])[:3])
    return inside


def _phantom_volume(scene, small_phantom, matrix=None, name="CT"):
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(small_phantom[0])))
    return add_volume(scene, array, matrix if matrix is not None else oblique_ijk_to_ras(spacing=(6, 6, 8)), name)


def _centre(volume, ijk) -> np.ndarray:
    return (volume_ijk_to_world(volume) @ [*ijk, 1.0])[:3]


@pytest.fixture(scope="module")
def demo_model_and_phantom(tmp_path_factory):
    """The bundled demo model and a phantom it has not seen: (model path, CT array (D, H, W), labels array)."""
    from MaskMedCore.data.phantom import generate_phantom
    from MaskMedCore.demo import find_demo_model
    from MaskMedCore.errors import CheckpointError

    try:
        model = find_demo_model()
    except CheckpointError as exc:
        pytest.skip(f"bundled demo model not available: {exc}")
    image, labels = generate_phantom(9001, (24, 48, 48), (8.0, 6.0, 6.0))
    return model, sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)


def test_roi_result_equals_the_cropped_volume_result(scene, demo_model_and_phantom, tmp_path):
    """Oblique volume under a translation, rotated ROI reaching out of the volume: the ROI run equals the model
    run on Slicer's voxel-based crop of the volume, placed back on the whole grid, empty outside the ROI."""
    model, ct, _ = demo_model_and_phantom
    volume = add_volume(scene, ct, oblique_ijk_to_ras(spacing=(6.0, 6.0, 8.0)), "CT")
    volume.SetAndObserveTransformNodeID(add_translation(scene, (30.0, -10.0, 5.0)).GetID())
    roi = add_roi(scene, _centre(volume, (40, 20, 12)), (190.0, 150.0, 140.0), angles=(10.0, -20.0, 30.0))
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path), scene)
    log = []

    result = task.run([volume], model=model, device="cpu", roi=roi, progress=log.append)

    assert result.crop.clipped and any("clipped to the volume" in line for line in log), log
    got = exported_labels(result.segmentation_node, CLASSES, volume, scene)

    cropped = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Slicer's crop")
    assert slicer.vtkSlicerCropVolumeLogic.CropVoxelBased(roi, volume, cropped) == 0  # 0: success
    reference = task.run([cropped], model=model, device="cpu", save_queries=False)
    expected_crop = exported_labels(reference.segmentation_node, CLASSES, cropped, scene)
    (i, j, k), (ni, nj, nk) = result.crop.start, result.crop.size
    assert expected_crop.shape == (nk, nj, ni)
    offset = np.linalg.solve(volume_ijk_to_world(volume), volume_ijk_to_world(cropped) @ [0, 0, 0, 1.0])[:3]
    np.testing.assert_allclose(offset, (i, j, k), atol=1e-4)  # Slicer's crop starts where ours does
    expected = np.zeros_like(got)
    expected[k : k + nk, j : j + nj, i : i + ni] = expected_crop
    inside = inside_roi_world(roi, volume)
    expected[~inside] = 0
    assert expected.any() and (expected_crop > 0).sum() > expected.astype(bool).sum(), "a weak comparison"
    np.testing.assert_array_equal(got, expected)
    assert list(tmp_path.iterdir()) == []
    task.close()


def test_roi_result_matches_the_whole_volume_result_inside_and_is_empty_outside(
    scene, demo_model_and_phantom, tmp_path
):
    """The same model on the whole volume and in an ROI around the liver: they agree inside the ROI (not voxel
    for voxel: the sliding window sees other context), and the ROI run is empty outside it."""
    model, ct, labels = demo_model_and_phantom
    volume = add_volume(scene, ct, np.diag([-6.0, -6.0, 8.0, 1.0]), "phantom")
    liver = np.argwhere(labels == 1).mean(axis=0)  # (k, j, i)
    roi = add_roi(scene, _centre(volume, liver[::-1]), (200.0, 200.0, 150.0))
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path), scene)

    whole = exported_labels(task.run([volume], model=model, device="cpu").segmentation_node, CLASSES, volume, scene)
    inside_run = task.run([volume], model="phantom", device="cpu", roi=roi)  # the bundled model, by name
    got = exported_labels(inside_run.segmentation_node, CLASSES, volume, scene)

    inside = inside_roi_world(roi, volume)
    assert 0.1 < inside.mean() < 0.9
    assert not got[~inside].any(), "the ROI run segmented voxels outside the ROI"
    assert (got[inside] == whole[inside]).mean() > 0.97
    checked = 0
    for value in np.unique(whole[inside]):
        a, b = got[inside] == value, whole[inside] == value
        if value == 0 or b.sum() < 50:
            continue
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.9, f"{CLASSES[value - 1]} inside the ROI: Dice {dice:.3f} against the whole-volume run"
        checked += 1
    assert checked >= 1
    task.close()


def test_roi_that_misses_the_volume_is_a_clear_error(scene, training_run, small_phantom, tmp_path):
    run, _, _ = training_run
    volume = _phantom_volume(scene, small_phantom, np.diag([6.0, 6.0, 8.0, 1.0]))
    far = add_roi(scene, (5000.0, 0.0, 0.0), (50.0, 50.0, 50.0), name="far")
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match="ROI 'far' and volume 'CT' do not overlap; move the ROI"):
        MaskMedLogic(temp_root=tmp_path).segment([volume], model=run, scene=scene, roi=far)
    assert node_count(scene) == before and list(tmp_path.iterdir()) == []


def test_roi_input_checks(scene, small_phantom):
    volume = _phantom_volume(scene, small_phantom, np.diag([6.0, 6.0, 8.0, 1.0]))
    centre = _centre(volume, (24, 24, 12))
    with pytest.raises(MaskMedSlicerError, match="markups ROI node"):
        roi_crop(volume, volume)
    thin = add_roi(scene, centre, (100.0, 100.0, 3.0), name="thin")
    with pytest.raises(MaskMedSlicerError, match="thinner than one voxel"):
        roi_crop(volume, thin)
    inverted = add_roi(scene, centre, (50.0, 50.0, 50.0), name="inverted")
    inverted.InsideOutOn()
    with pytest.raises(MaskMedSlicerError, match="inside-out"):
        roi_crop(volume, inverted)
    edge = add_roi(scene, _centre(volume, (0, 0, 0)), (60.0, 60.0, 80.0), name="edge")
    crop = roi_crop(volume, edge)
    assert crop.clipped and crop.start == (0, 0, 0) and "clipped to the volume" in crop.message
    # Slicer's rule: whole voxel cells inside the box; voxel 0's cell starts half a voxel outside
    assert crop.size == (5, 5, 5)  # (n + 0.5) * 6 mm <= 30 mm and (n + 0.5) * 8 mm <= 40 mm: n <= 4
