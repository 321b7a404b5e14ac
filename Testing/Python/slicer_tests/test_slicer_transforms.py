"""Issue 15, defect 3: results of a volume under a parent transform land where the volume is (real MRML).

Before the fix the temporary label map had no transform while the segmentation node was put under the
volume's, so Slicer's import moved the segments by the inverse transform: a +50 mm shift put them
100 mm away from the volume.
"""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
from MaskMedSlicerLib import (  # noqa: E402
    MaskMedLogic,
    SegmentTask,
    add_binary_segment,
    export_volume,
    labelmap_file_to_segmentation,
    volume_node_from_file,
)
from slicer_test_helpers import add_volume, oblique_ijk_to_ras  # noqa: E402
from world_geometry import add_translation, segment_world_centroid, volume_ijk_to_world, world_centroid  # noqa: E402

NAMES = ["background", "liver", "spleen"]
SHIFT = (50.0, -20.0, 10.0)


def _labels() -> np.ndarray:
    labels = np.zeros((8, 12, 14), np.uint8)
    labels[1:4, 2:6, 1:5] = 1
    labels[4:7, 6:11, 8:13] = 2
    return labels


@pytest.fixture
def shifted_volume_and_labels(scene, tmp_path):
    """An oblique volume under a +50 mm translation, and a label map file on its grid (local coordinates)."""
    matrix = oblique_ijk_to_ras(spacing=(1.5, 1.2, 2.0))
    volume = add_volume(scene, np.zeros((8, 12, 14), np.int16), matrix, "CT")
    volume.SetAndObserveTransformNodeID(add_translation(scene, SHIFT).GetID())
    label_node = add_volume(scene, _labels(), matrix, "tmp labels", label=True)
    path = export_volume(label_node, tmp_path / "labels.nii.gz")
    scene.RemoveNode(label_node)
    return volume, path


def test_label_map_of_a_transformed_volume_lands_on_the_volume(scene, shifted_volume_and_labels):
    volume, path = shifted_volume_and_labels
    seg = labelmap_file_to_segmentation(path, volume, NAMES, scene, create_closed_surface=False)
    assert seg.GetTransformNodeID() == volume.GetTransformNodeID()
    for value, name in enumerate(NAMES[1:], start=1):
        expected = world_centroid(_labels() == value, volume_ijk_to_world(volume))
        np.testing.assert_allclose(segment_world_centroid(seg, name), expected, atol=1e-3, err_msg=name)


def test_query_mask_of_a_transformed_volume_lands_on_the_volume(scene, shifted_volume_and_labels):
    volume, path = shifted_volume_and_labels
    seg = labelmap_file_to_segmentation(path, volume, NAMES, scene, create_closed_surface=False)
    mask = sitk.ReadImage(str(path)) == 2  # a query mask, in the volume's local coordinates
    add_binary_segment(mask, seg, "query_00", "Q0", (1.0, 1.0, 0.0), scene, reference_volume_node=volume)
    expected = world_centroid(_labels() == 2, volume_ijk_to_world(volume))
    np.testing.assert_allclose(segment_world_centroid(seg, "query_00"), expected, atol=1e-3)


def test_segmenting_a_translated_volume_matches_the_reference_labels_in_world(scene, tmp_path):
    """Real ``maskmed predict`` child (bundled demo model) on a phantom under a +50 mm translation."""
    from MaskMedCore.data.phantom import generate_phantom
    from MaskMedCore.demo import find_demo_model
    from MaskMedCore.errors import CheckpointError

    try:
        model = find_demo_model()
    except CheckpointError as exc:
        pytest.skip(f"bundled demo model not available: {exc}")
    image, labels = generate_phantom(9001, (24, 48, 48), (8.0, 6.0, 6.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    reference = sitk.GetArrayFromImage(labels)
    volume = volume_node_from_file(tmp_path / "ct.nii.gz", scene, "phantom CT")
    volume.SetAndObserveTransformNodeID(add_translation(scene, SHIFT).GetID())
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path / "work"), scene)
    (tmp_path / "work").mkdir()

    result = task.run([volume], model=model, device="cpu")

    seg = result.segmentation_node
    for value, name in ((1, "liver"), (2, "spleen"), (5, "aorta")):
        expected = world_centroid(reference == value, volume_ijk_to_world(volume))
        distance = np.linalg.norm(segment_world_centroid(seg, name) - expected)
        assert distance < 8.0, f"{name}: {distance:.1f} mm from the reference labels (one voxel is 6-8 mm)"
    liver = max((q for q in result.queries.queries if q["class_name"] == "liver"), key=lambda q: q["score"])
    overlay, segment_id, _ = task.inspection.show_query(liver["index"])
    assert overlay.GetTransformNodeID() == volume.GetTransformNodeID()
    distance = np.linalg.norm(
        segment_world_centroid(seg, segment_id) - world_centroid(reference == 1, volume_ijk_to_world(volume))
    )
    assert distance < 8.0, f"the liver query's mask is {distance:.1f} mm from the liver"
    task.close()
