"""Label map file -> segmentation node on real slicer-core MRML: names, colours, voxels, geometry."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import (  # noqa: E402
    MaskMedSlicerError,
    default_label_colors,
    export_volume,
    labelmap_file_to_segmentation,
    terminology_entry,
)
from MaskMedSlicerLib.volume_io import ijk_to_ras  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

NAMES = ["background", "liver", "spleen", "kidney_left", "kidney_right", "aorta"]


def _labels() -> np.ndarray:
    """(D, H, W) uint8 with liver, spleen and aorta present, both kidneys absent."""
    labels = np.zeros((6, 10, 12), np.uint8)
    labels[1:4, 2:6, 1:5] = 1
    labels[2:5, 5:9, 7:11] = 2
    labels[0:6, 8:10, 5:7] = 5
    return labels


@pytest.fixture
def reference_and_file(scene, tmp_path):
    """A reference volume with oblique geometry and a label map file on the same grid."""
    matrix = oblique_ijk_to_ras(spacing=(0.8, 1.1, 2.5))
    reference = add_volume(scene, np.zeros((6, 10, 12), np.int16), matrix, "CT")
    label_node = add_volume(scene, _labels(), matrix, "tmp labels", label=True)
    path = export_volume(label_node, tmp_path / "case.nii.gz")
    scene.RemoveNode(label_node)
    return reference, path


def _exported_labels(seg_node, segment_ids, reference, scene) -> np.ndarray:
    """The segments exported with Slicer's own logic to a label map on the reference grid (value = position + 1)."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap, reference)
    np.testing.assert_allclose(ijk_to_ras(labelmap), ijk_to_ras(reference), atol=1e-4)
    return slicer.util.arrayFromVolume(labelmap).copy()


def test_segments_named_coloured_and_voxel_exact(scene, reference_and_file):
    reference, path = reference_and_file
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene)

    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == NAMES[1:]
    expected_colors = default_label_colors(NAMES)
    file_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    for k, name in enumerate(NAMES[1:], start=1):
        segment = segmentation.GetSegment(name)
        assert segment.GetName() == name
        np.testing.assert_allclose(segment.GetColor(), expected_colors[k], atol=1e-6)
        image = segment.GetRepresentation("Binary labelmap")
        voxels = vtk_to_numpy(image.GetPointData().GetScalars())
        assert int((voxels == segment.GetLabelValue()).sum()) == int((file_labels == k).sum()), name
    # kidneys are absent from the prediction: empty segments (keep_empty=True)
    assert int((file_labels == 3).sum()) == 0

    # voxel for voxel on the reference grid, segment k exported as value k
    np.testing.assert_array_equal(_exported_labels(seg, NAMES[1:], reference, scene), file_labels)

    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is reference
    assert seg.GetDisplayNode() is not None
    assert segmentation.ContainsRepresentation("Closed surface")


def test_geometry_reference_matches_volume(scene, reference_and_file):
    reference, path = reference_and_file
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene, create_closed_surface=False)
    geometry = seg.GetSegmentation().GetConversionParameter("Reference image geometry")
    matrix = ijk_to_ras(reference)
    numbers = [float(v) for v in geometry.split(";")[:16]]
    np.testing.assert_allclose(np.reshape(numbers, (4, 4)), matrix, atol=1e-4)
    assert not seg.GetSegmentation().ContainsRepresentation("Closed surface")


def test_skip_empty_custom_colours_and_terminology(scene, reference_and_file):
    reference, path = reference_and_file
    # one per foreground class; the last is the grey Slicer would treat as "unset"
    colors = [(0.1 * k, 0.5, 1.0 - 0.1 * k) for k in range(1, 6)]
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene, colors=colors, keep_empty=False, name="mine")
    segmentation = seg.GetSegmentation()
    assert seg.GetName() == "mine"
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == [
        "liver",
        "spleen",
        "aorta",
    ]
    np.testing.assert_allclose(segmentation.GetSegment("spleen").GetColor(), colors[1], atol=1e-6)
    np.testing.assert_allclose(segmentation.GetSegment("aorta").GetColor(), colors[4], atol=0.01)

    # with terminology: tags, and the standard colours win over the given ones (see test_slicer_terminology.py)
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene, colors=colors, use_terminology=True)
    segmentation = seg.GetSegmentation()
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    value = vtk.reference("")
    assert segmentation.GetSegment("liver").GetTag(tag, value)
    assert str(value) == terminology_entry("liver")
    parsed = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(value), parsed)
    assert parsed.GetCategoryObject().GetCodeValue() == "123037004"
    assert parsed.GetTypeObject().GetCodeValue() == "10200004"
    assert parsed.GetTypeObject().GetCodingSchemeDesignator() == "SCT"

    left = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terminology_entry("Kidney Left"), left)
    assert left.GetTypeObject().GetCodeValue() == "64033007"
    assert left.GetTypeModifierObject().GetCodeValue() == "7771000"
    assert terminology_entry("tumour") is None


def test_bad_label_value_adds_no_node(scene, tmp_path):
    reference = add_volume(scene, np.zeros((3, 4, 5), np.int16), np.eye(4), "CT")
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1, 1] = 9
    bad = add_volume(scene, labels, np.eye(4), "bad", label=True)
    path = export_volume(bad, tmp_path / "bad.nii.gz")
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match=r"bad.nii.gz holds values \[9\]"):
        labelmap_file_to_segmentation(path, reference, NAMES, scene)
    with pytest.raises(MaskMedSlicerError, match="colours"):
        labelmap_file_to_segmentation(path, reference, NAMES, scene, colors=[(1, 0, 0)])
    assert node_count(scene) == before


def test_rerun_into_same_node_replaces_only_maskmed_segments(scene, reference_and_file):
    reference, path = reference_and_file
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene, create_closed_surface=False)
    seg.GetSegmentation().AddEmptySegment("my_notes", "my notes", (1.0, 1.0, 0.0))
    again = labelmap_file_to_segmentation(path, reference, NAMES, scene, segmentation_node=seg)
    assert again is seg
    ids = [seg.GetSegmentation().GetNthSegmentID(i) for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    assert sorted(ids) == sorted([*NAMES[1:], "my_notes"])
