"""A result without queries (an nnU-Net model, or MaskMed's point-wise head): loaded into the scene like any
other, and the Inspect section says plainly that there is nothing per query to inspect."""

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import (  # noqa: E402
    NO_QUERIES_MESSAGE,
    Inspection,
    MaskMedLogic,
    MaskMedSlicerError,
    QueryResults,
    nnunet_info,
)
from MaskMedSlicerLib.volume_io import image_from_volume_node  # noqa: E402
from nnunet_result_builders import DATASET, write_result_folder  # noqa: E402
from slicer_test_helpers import add_volume, oblique_ijk_to_ras  # noqa: E402

LABELS = ["background", "anterior", "posterior"]


def write_pointwise_prediction(folder, reference_node, embeddings: bool = False) -> np.ndarray:
    """``case.nii.gz`` and ``case_summary.json`` as ``maskmed predict`` writes them for an nnU-Net model."""
    labels = np.zeros(reference_node.GetImageData().GetDimensions()[::-1], np.uint8)  # (D, H, W)
    labels[2:5, 3:7, 4:8], labels[5:7, 3:7, 4:8] = 1, 2
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(image_from_volume_node(reference_node))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "case.nii.gz"))
    summary = {
        "label_names": LABELS,
        "class_volumes_ml": {"anterior": 0.1, "posterior": 0.05},
        "queries": [],
        "model": {"kind": "nnunet", "head": "pointwise", "folds": ["0"]},
    }
    (folder / "case_summary.json").write_text(json.dumps(summary))
    if embeddings:  # what np.savez makes of None embeddings: object arrays, unreadable without pickle
        np.savez(folder / "case_embeddings.npz", class_embeddings=np.array(None, dtype=object))
    return labels


def tables(scene) -> int:
    return scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems()


@pytest.fixture
def reference(scene):
    return add_volume(scene, np.zeros((8, 10, 12), np.float32), oblique_ijk_to_ras(), "MRI")


def test_query_results_tolerate_an_empty_query_list(tmp_path, reference):
    write_pointwise_prediction(tmp_path / "out", reference, embeddings=True)
    results = QueryResults.load(tmp_path / "out", "case")
    assert not results.has_queries and results.queries == [] and results.query_maps == {}
    assert results.class_probabilities is None and results.label_names == LABELS
    with pytest.raises(MaskMedSlicerError, match="has no queries: there are no per-query masks or embeddings"):
        results.query(0)


def test_an_nnunet_result_loads_without_query_tables(tmp_path, scene, reference):
    write_result_folder(tmp_path / "model")
    info = nnunet_info(tmp_path / "model" / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    labels = write_pointwise_prediction(tmp_path / "out", reference)
    logic = MaskMedLogic()
    result = logic.import_result(tmp_path / "out", reference, info, scene)
    assert not result.has_queries and result.tables() == [] and result.query_maps == {}
    assert result.nodes() == [result.segmentation_node]
    assert tables(scene) == 0, "a model without queries must not leave empty tables in the scene"
    segmentation = result.segmentation_node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == LABELS[1:]
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for name in LABELS[1:]:
        ids.InsertNextValue(name)
    logic_ = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic_.ExportSegmentsToLabelmapNode(result.segmentation_node, ids, labelmap, reference)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(labelmap), labels)
    scene.RemoveNode(labelmap)

    inspection = Inspection(logic, result)
    assert inspection.message == NO_QUERIES_MESSAGE
    assert NO_QUERIES_MESSAGE == (
        "This model (nnU-Net / point-wise head) has no queries: there are no per-query masks or embeddings to inspect."
    )
    with pytest.raises(MaskMedSlicerError, match="has no queries"):
        inspection.show_query(0)
    assert inspection.nodes() == []
    inspection.clear()
    assert tables(scene) == 0 and result.segmentation_node.GetScene() is scene
