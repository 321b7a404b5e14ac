"""Issue 15, defect 8: "use standard terminology" sets the segments' names and colours, not only the tag.

The reference is Slicer itself: ``data/SegmentationCategoryTypeModifier-DICOM-Master-extract.json`` holds the
liver, spleen, kidney and aorta entries of Slicer's DICOM master list, copied unchanged from
``Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-DICOM-Master.json`` (Slicer main,
583e9b37d5; slicer-core does not ship the terminology files). Slicer's terminology logic loads it and
looks up each tag MaskMed writes, giving the name (``3dSlicerLabel``) and colour Slicer recommends.
"""

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import export_volume, labelmap_file_to_segmentation, terminology_entry  # noqa: E402
from slicer_test_helpers import add_volume  # noqa: E402

MASTER_LIST = Path(__file__).parent / "data" / "SegmentationCategoryTypeModifier-DICOM-Master-extract.json"
NAMES = ["background", "liver", "spleen", "kidney_left", "kidney_right", "aorta", "tumour"]


@pytest.fixture(scope="module")
def slicer_terminology():
    """Slicer's terminology logic with the master-list extract loaded: (logic, context name)."""
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    context = logic.LoadTerminologyFromFile(str(MASTER_LIST))
    assert context == "Segmentation category and type - DICOM master list"
    return logic, context


def slicer_recommendation(slicer_terminology, class_name: str):
    """(name, RGB 0..1) that Slicer's terminology logic recommends for MaskMed's tag of ``class_name``."""
    logic, context = slicer_terminology
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(terminology_entry(class_name), entry), class_name
    assert logic.UpdateEntryFromLoadedTerminologies(entry, [context], []), class_name
    modifier = entry.GetTypeModifierObject()
    source = modifier if modifier.GetCodeValue() else entry.GetTypeObject()
    return source.GetSlicerLabel(), tuple(c / 255.0 for c in source.GetRecommendedDisplayRGBValue())


@pytest.fixture
def labels_file(scene, tmp_path):
    labels = np.zeros((4, 8, len(NAMES)), np.uint8)
    for value in range(1, len(NAMES)):
        labels[1:3, 2:6, value] = value
    path = export_volume(add_volume(scene, labels, np.eye(4), "labels", label=True), tmp_path / "labels.nii.gz")
    return add_volume(scene, np.zeros(labels.shape, np.int16), np.eye(4), "CT"), path


def test_standard_names_and_colours_are_slicers(scene, labels_file, slicer_terminology):
    reference, path = labels_file
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene, use_terminology=True)
    segmentation = seg.GetSegmentation()
    for name in NAMES[1:-1]:
        segment = segmentation.GetSegment(name)  # the ID stays the class name
        expected_name, expected_color = slicer_recommendation(slicer_terminology, name)
        assert segment.GetName() == expected_name, name
        np.testing.assert_allclose(segment.GetColor(), expected_color, atol=1e-6, err_msg=name)
    assert segmentation.GetSegment("kidney_left").GetName() == "left kidney"
    # no standard term: name kept, no MaskMed tag (Slicer's default entry, if any, stays)
    tumour = segmentation.GetSegment("tumour")
    assert tumour.GetName() == "tumour" and "123037004" not in _tag(tumour)


def _tag(segment) -> str:
    import vtk

    value = vtk.reference("")
    segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
    return str(value)


def test_without_terminology_names_are_the_class_names(scene, labels_file):
    reference, path = labels_file
    seg = labelmap_file_to_segmentation(path, reference, NAMES, scene)
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(len(NAMES) - 1)] == NAMES[1:]
    assert "10200004" not in _tag(segmentation.GetSegment("liver"))
