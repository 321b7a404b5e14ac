"""Lesions as instances, their boxes and case classification (issue 12) loaded into real slicer-core MRML.

The prediction folders are written here with SimpleITK + json in the format of ``maskmed predict``; the
expected box centres, sizes and corners are computed by hand from the volume's IJK-to-RAS matrix (oblique,
anisotropic, non-zero origin), and "inside the ROI" is asked of the ROI node itself (``IsPointInROIWorld``).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import MaskMedLogic, MaskMedSlicerError, ModelInfo, roi_crop  # noqa: E402
from MaskMedSlicerLib.instance_views import RESULT_ATTRIBUTE, SCORE_TAG, instance_result_nodes  # noqa: E402
from MaskMedSlicerLib.roi import crop_image  # noqa: E402
from MaskMedSlicerLib.self_test import exported_labels  # noqa: E402
from MaskMedSlicerLib.volume_io import image_from_volume_node  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402
from world_geometry import volume_ijk_to_world  # noqa: E402

LABELS = ["background", "organ", "lesion"]
SHAPE = (10, 12, 14)  # (D, H, W)
SPACING = (0.7, 1.3, 2.9)  # (i, j, k) mm
MATRIX = oblique_ijk_to_ras(spacing=SPACING, origin=(10.0, -20.0, 30.0))
INFO = ModelInfo(Path("model.pt"), channel_names=("CT",), label_names=tuple(LABELS), dataset_name="lesions")
FLIP = np.diag([-1.0, -1.0, 1.0])


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) label map and instance map: a large lesion (id 1, not a box) and a small one (id 2)."""
    instances = np.zeros(SHAPE, np.uint16)
    instances[2:6, 3:9, 4:11] = 1
    instances[2, 3, 4] = 0  # a corner missing: the segment must follow the voxels, not the box
    instances[7:9, 9:11, 1:3] = 2
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:2, 0:4, 0:5] = 1
    labels[instances > 0] = 2
    return labels, instances


def _mask_box(instances: np.ndarray, instance_id: int, matrix=MATRIX) -> dict:
    """The mask box of one instance, computed by hand from the IJK-to-RAS matrix (what the producer writes)."""
    k, j, i = np.nonzero(instances == instance_id)
    low, high = np.array([i.min(), j.min(), k.min()]), np.array([i.max(), j.max(), k.max()])
    center_ras = (matrix @ [*((low + high) / 2.0), 1.0])[:3]
    return {
        "instance": instance_id,
        "source": "mask",
        "index_min": low.tolist(),
        "index_max": high.tolist(),
        "center_lps": (FLIP @ center_ras).tolist(),
        "size_mm": ((high - low + 1) * np.array(SPACING)).tolist(),
    }


HEAD_BOX = {"instance": 1, "source": "head", "index_min": [4, 3, 2], "index_max": [9, 8, 5],
            "center_lps": [-12.5, 30.25, 36.0], "size_mm": [4.0, 7.5, 11.0]}  # fmt: skip
CASE_CLASSIFICATION = {
    "lesion_count": {"predicted": "several", "probabilities": {"none": 0.05, "one": 0.25, "several": 0.7}},
    "malignant": {"predicted": "no", "probabilities": {"no": 0.6, "yes": 0.4}},
}


def write_prediction(folder, reference, summary_extra=None, with_keys=True, instance_map=None, matrix=MATRIX) -> dict:
    """``case.nii.gz``, ``case_instances.nii.gz`` and ``case_summary.json`` on the grid of ``reference`` (a
    volume node or a SimpleITK image) whose IJK-to-RAS matrix is ``matrix``."""
    labels, instances = _maps()
    geometry = reference if isinstance(reference, sitk.Image) else image_from_volume_node(reference)
    folder.mkdir(parents=True, exist_ok=True)
    for array, name in ((labels, "case.nii.gz"), (instances if instance_map is None else instance_map, None)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(geometry)
        sitk.WriteImage(image, str(folder / (name or "case_instances.nii.gz")))
    summary = {
        "label_names": LABELS,
        "class_volumes_ml": {"organ": 0.1, "lesion": 0.2},
        "queries": [
            {"index": 0, "class_index": 2, "class_name": "lesion", "score": 0.93, "volume_ml": 0.3},
            {"index": 7, "class_index": 2, "class_name": "lesion", "score": 0.61, "volume_ml": 0.01},
        ],
    }
    if with_keys:
        voxel_ml = float(np.prod(SPACING)) / 1000.0
        summary["instances"] = [  # listed out of order: segments are ordered by id
            {"id": 2, "class_name": "lesion", "label_value": 2, "score": 0.61, "query": 7,
             "voxel_count": int((instances == 2).sum()), "volume_ml": float((instances == 2).sum() * voxel_ml)},
            {"id": 1, "class_name": "lesion", "label_value": 2, "score": 0.93, "query": 0,
             "voxel_count": int((instances == 1).sum()), "volume_ml": float((instances == 1).sum() * voxel_ml)},
        ]  # fmt: skip
        summary["boxes"] = [_mask_box(instances, 1, matrix), dict(HEAD_BOX), _mask_box(instances, 2, matrix)]
        summary["case_classification"] = json.loads(json.dumps(CASE_CLASSIFICATION))
    summary.update(summary_extra or {})
    (folder / "case_summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def reference(scene):
    return add_volume(scene, np.zeros(SHAPE, np.float32), MATRIX, "CT")


def _segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]


def _tag(segment, name: str) -> str:
    value = vtk.reference("")
    assert segment.GetTag(name, value), name
    return str(value)


def _column(table_node, title: str) -> list:
    table = table_node.GetTable()
    array = table.GetColumnByName(title)
    assert array is not None, f"no column {title!r} in {table_node.GetName()}"
    return [array.GetValue(r) for r in range(table.GetNumberOfRows())]


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _rois(scene) -> dict:
    nodes = scene.GetNodesByClass("vtkMRMLMarkupsROINode")
    return {nodes.GetItemAsObject(n).GetName(): nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())}


def assert_roi_is_voxel_box(roi, mask: np.ndarray, volume, matrix: np.ndarray) -> None:
    """The ROI is the bounding box of ``mask``'s voxels (D, H, W) on ``volume``'s grid (IJK-to-RAS ``matrix``):
    its centre, size and 8 corners by hand, and the voxel centres the ROI node itself says are inside."""
    k, j, i = np.nonzero(mask)
    low, high = np.array([i.min(), j.min(), k.min()]), np.array([i.max(), j.max(), k.max()])
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    np.testing.assert_allclose(roi.GetCenter(), (matrix @ [*((low + high) / 2.0), 1.0])[:3], atol=1e-6)
    np.testing.assert_allclose(roi.GetSize(), (high - low + 1) * spacing, atol=1e-6)
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T  # (8, 3)
    object_to_world = _matrix(roi.GetObjectToWorldMatrix())
    corners = [(object_to_world @ [*(s * np.asarray(roi.GetSize()) / 2.0), 1.0])[:3] for s in signs]
    expected = [(matrix @ [*np.where(s < 0, low - 0.5, high + 0.5), 1.0])[:3] for s in signs]
    distances = np.linalg.norm(np.array(corners)[:, None] - np.array(expected)[None], axis=-1)  # (8, 8)
    assert distances.min(axis=1).max() < 1e-5 and distances.min(axis=0).max() < 1e-5, "corners differ"
    box = np.zeros(mask.shape, bool)
    box[low[2] : high[2] + 1, low[1] : high[1] + 1, low[0] : high[0] + 1] = True
    to_world = volume_ijk_to_world(volume)
    inside = np.zeros(mask.shape, bool)
    for kk, jj, ii in np.ndindex(*mask.shape):
        inside[kk, jj, ii] = roi.IsPointInROIWorld((to_world @ [ii, jj, kk, 1.0])[:3])
    np.testing.assert_array_equal(inside, box)


def test_instances_boxes_and_tables_in_the_scene(tmp_path, scene, reference):
    write_prediction(tmp_path / "out", reference)
    logic = MaskMedLogic()
    result = logic.import_result(tmp_path / "out", reference, INFO, scene)
    nodes = result.instances
    _, instances = _maps()

    # one segment per instance, ordered by id, in a node of its own; the semantic node is unchanged
    assert _segment_ids(result.segmentation_node) == ["organ", "lesion"]
    seg = nodes.segmentation_node
    assert seg.GetName() == "CT instances" and seg is not result.segmentation_node
    assert _segment_ids(seg) == ["lesion 1", "lesion 2"]
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetSegment(s).GetName() for s in _segment_ids(seg)] == [
        "lesion 1 (score 0.93)",
        "lesion 2 (score 0.61)",
    ]
    assert [float(_tag(segmentation.GetSegment(s), SCORE_TAG)) for s in _segment_ids(seg)] == [0.93, 0.61]
    assert _tag(segmentation.GetSegment("lesion 2"), "MaskMed.instanceId") == "2"
    colors = [tuple(segmentation.GetSegment(s).GetColor()) for s in _segment_ids(seg)]
    assert len(set(colors)) == 2
    # voxel for voxel: segment n exported as value n + 1 equals instance id n + 1
    np.testing.assert_array_equal(exported_labels(seg, ["lesion 1", "lesion 2"], reference, scene), instances)
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is reference

    # boxes: locked ROIs, mask boxes shown, the head box hidden
    rois = _rois(scene)
    assert sorted(rois) == ["lesion 1 (head box)", "lesion 1 (mask box)", "lesion 2 (mask box)"]
    assert nodes.box_nodes == {
        (1, "mask"): rois["lesion 1 (mask box)"],
        (1, "head"): rois["lesion 1 (head box)"],
        (2, "mask"): rois["lesion 2 (mask box)"],
    }
    axes = MATRIX[:3, :3] / np.array(SPACING)
    for instance_id in (1, 2):
        roi = rois[f"lesion {instance_id} (mask box)"]
        assert_roi_is_voxel_box(roi, instances == instance_id, reference, MATRIX)
        np.testing.assert_allclose(_matrix(roi.GetObjectToNodeMatrix())[:3, :3], axes, atol=1e-6)
        assert roi.GetLocked() and roi.GetDisplayNode().GetVisibility()
        assert roi.GetAttribute(RESULT_ATTRIBUTE) == reference.GetID()
        np.testing.assert_allclose(roi.GetDisplayNode().GetSelectedColor(), colors[instance_id - 1], atol=1e-6)
    head = rois["lesion 1 (head box)"]
    np.testing.assert_allclose(head.GetCenter(), FLIP @ HEAD_BOX["center_lps"], atol=1e-6)
    np.testing.assert_allclose(head.GetSize(), HEAD_BOX["size_mm"], atol=1e-6)
    np.testing.assert_allclose(_matrix(head.GetObjectToNodeMatrix())[:3, :3], axes, atol=1e-6)
    assert head.GetLocked() and not head.GetDisplayNode().GetVisibility()
    assert "score 0.930" in head.GetDescription()

    # the instances table: one row per instance with the mask box's RAS centre and size
    table = nodes.instances_table
    assert table.GetName() == "CT instances" and table.GetAttribute(RESULT_ATTRIBUTE) == reference.GetID()
    assert _column(table, "id") == [1, 2] and _column(table, "class") == ["lesion", "lesion"]
    assert _column(table, "score") == pytest.approx([0.93, 0.61])
    assert _column(table, "voxels") == [int((instances == 1).sum()), int((instances == 2).sum())]
    assert _column(table, "query") == [0, 7]
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert _column(table, "volume (mL)") == pytest.approx([(instances == n).sum() * voxel_ml for n in (1, 2)])
    for n, axis in enumerate("RAS"):
        expected = [rois[f"lesion {i} (mask box)"].GetCenter()[n] for i in (1, 2)]
        assert _column(table, f"mask box centre {axis} (mm)") == pytest.approx(expected)
    assert _column(table, "mask box size K (mm)") == pytest.approx([4 * SPACING[2], 2 * SPACING[2]])

    # the case classification table: all class probabilities, NaN where a task has no such class
    cases = nodes.classification_table
    assert cases.GetName() == "CT case classification"
    assert _column(cases, "task") == ["lesion_count", "malignant"]
    assert _column(cases, "predicted") == ["several", "no"]
    assert _column(cases, "probability") == pytest.approx([0.7, 0.6])
    assert _column(cases, "p(one)")[0] == pytest.approx(0.25) and math.isnan(_column(cases, "p(one)")[1])
    assert math.isnan(_column(cases, "p(yes)")[0]) and _column(cases, "p(yes)")[1] == pytest.approx(0.4)

    # plain data for the console
    data = logic.instances(result)
    assert [i["id"] for i in data["instances"]] == [1, 2]
    assert data["instances"][0]["segment_id"] == "lesion 1" and data["instances"][0]["score"] == 0.93
    assert [(b["instance"], b["source"]) for b in data["boxes"]] == [(1, "mask"), (1, "head"), (2, "mask")]
    assert data["boxes"][1]["roi_node_id"] == head.GetID()
    np.testing.assert_allclose(data["boxes"][1]["center_ras"], FLIP @ HEAD_BOX["center_lps"])
    assert data["case_classification"]["lesion_count"]["predicted"] == "several"
    assert data["case_classification"]["lesion_count"]["probability"] == 0.7
    json.dumps(data)  # plain Python data
    assert set(result.nodes()) >= set(nodes.nodes())


def test_a_new_run_replaces_the_instance_nodes_of_that_volume_only(tmp_path, scene, reference):
    write_prediction(tmp_path / "out", reference)
    logic = MaskMedLogic()
    first = logic.import_result(tmp_path / "out", reference, INFO, scene)
    other = add_volume(scene, np.zeros(SHAPE, np.float32), MATRIX, "MR")
    write_prediction(tmp_path / "other", other)
    on_other = logic.import_result(tmp_path / "other", other, INFO, scene)
    user_roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "lesion 1 (mask box)")  # the user's, same name
    user_table = scene.AddNewNodeByClass("vtkMRMLTableNode", "CT instances")
    ours = instance_result_nodes(scene, reference)
    assert len(ours) == 6 and set(ours) == set(first.instances.nodes())

    second = logic.import_result(tmp_path / "out", reference, INFO, scene)
    now = instance_result_nodes(scene, reference)
    assert set(now) == set(second.instances.nodes()) and len(now) == 6
    assert all(node.GetScene() is None for node in first.instances.nodes()), "the previous nodes must go"
    assert all(node.GetScene() is scene for node in on_other.instances.nodes()), "another volume's results stay"
    assert user_roi.GetScene() is scene and user_table.GetScene() is scene
    assert scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == 3 + 3 + 1
    assert first.segmentation_node.GetScene() is scene, "the semantic segmentation is not an instance node"


def test_a_summary_without_the_new_keys_loads_as_before(tmp_path, scene, reference):
    write_prediction(tmp_path / "out", reference, with_keys=False)  # an instance map lying there is ignored
    logic = MaskMedLogic()
    before = node_count(scene)
    result = logic.import_result(tmp_path / "out", reference, INFO, scene)
    assert result.instances is None
    assert result.nodes() == [result.segmentation_node, result.summary_table]
    assert node_count(scene) == before + len(result.nodes()) + 1  # + the segmentation's display node
    assert instance_result_nodes(scene) == [] and _rois(scene) == {}
    assert logic.instances(result) == {"instances": [], "boxes": [], "case_classification": {}}


def test_instances_key_with_none_found_gives_an_empty_table(tmp_path, scene, reference):
    write_prediction(tmp_path / "out", reference, {"instances": [], "boxes": []}, instance_map=np.zeros(SHAPE, "u2"))
    result = MaskMedLogic().import_result(tmp_path / "out", reference, INFO, scene)
    nodes = result.instances
    assert nodes.segmentation_node is None and nodes.box_nodes == {}
    assert nodes.instances_table.GetTable().GetNumberOfRows() == 0
    assert _column(nodes.classification_table, "task") == ["lesion_count", "malignant"]


def _bad_map(kind: str) -> np.ndarray:
    _, instances = _maps()
    instances[0, 0, 0] = 9 if kind == "unknown id" else instances[0, 0, 0]
    return instances


BAD_SUMMARIES = [
    ({"boxes": [{**HEAD_BOX, "instance": 7}]}, r"boxes\[0\]\.instance is 7, but instances has ids \[1, 2\]"),
    (
        {"case_classification": {"lesion_count": {"predicted": "one", "probabilities": [0.1, 0.9]}}},
        r"case_classification\['lesion_count'\]\.probabilities is \[0\.1, 0\.9\]; expected an object",
    ),
    (
        {"case_classification": {"lesion_count": {"predicted": "one", "probabilities": {"one": 1.5}}}},
        r"probabilities\['one'\] is 1\.5; expected a finite number in 0\.\.1",
    ),
    (
        {"case_classification": {"lesion_count": {"predicted": "two", "probabilities": {"one": 1.0}}}},
        r"predicted is 'two', which is not in probabilities \['one'\]",
    ),
    ({"instances": [{"id": 1, "class_name": "lesion", "score": "high"}]}, r"instances\[0\]\.score is 'high'"),
    ({"instances": [{"id": 1, "score": 0.5}]}, r"instances\[0\] has no class_name"),
    ({"boxes": [{**HEAD_BOX, "source": "guess"}]}, r"source is 'guess'; expected one of \['mask', 'head'\]"),
    ({"boxes": [{**HEAD_BOX, "center_lps": [1, 2]}]}, r"center_lps is \[1, 2\]; expected a list of 3"),
    ({"boxes": [{**HEAD_BOX, "index_min": [10, 3, 2]}, ]}, r"index_min \[10, 3, 2\] exceeds index_max \[9, 8, 5\]"),
    ({"boxes": [HEAD_BOX, HEAD_BOX]}, r"more than one box per instance and source"),
    ({"instances": {"1": {}}}, r"instances is dict; expected a list"),
]  # fmt: skip


@pytest.mark.parametrize("extra, message", BAD_SUMMARIES)
def test_a_malformed_summary_is_one_clear_error_and_adds_nothing(tmp_path, scene, reference, extra, message):
    write_prediction(tmp_path / "out", reference, extra)
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match=message) as error:
        MaskMedLogic().import_result(tmp_path / "out", reference, INFO, scene)
    assert "case_summary.json" in str(error.value)
    assert node_count(scene) == before


def test_bad_instance_maps_are_refused(tmp_path, scene, reference):
    logic = MaskMedLogic()
    before = node_count(scene)
    write_prediction(tmp_path / "a", reference, instance_map=_bad_map("unknown id"))
    with pytest.raises(MaskMedSlicerError, match=r"case_instances.nii.gz holds ids \[9\] that .* does not list"):
        logic.import_result(tmp_path / "a", reference, INFO, scene)
    write_prediction(tmp_path / "b", reference)
    (tmp_path / "b" / "case_instances.nii.gz").unlink()
    with pytest.raises(MaskMedSlicerError, match=r"lists 2 instance\(s\) but the instance map .* does not exist"):
        logic.import_result(tmp_path / "b", reference, INFO, scene)
    write_prediction(tmp_path / "c", reference)
    moved = sitk.ReadImage(str(tmp_path / "c" / "case_instances.nii.gz"))
    moved.SetOrigin([v + 5.0 for v in moved.GetOrigin()])
    sitk.WriteImage(moved, str(tmp_path / "c" / "case_instances.nii.gz"))
    with pytest.raises(MaskMedSlicerError, match=r"is not on the grid of the label map case.nii.gz"):
        logic.import_result(tmp_path / "c", reference, INFO, scene)
    write_prediction(tmp_path / "d", reference, {"instances": None, "boxes": [HEAD_BOX]})
    with pytest.raises(MaskMedSlicerError, match=r"instances is NoneType; expected a list"):
        logic.import_result(tmp_path / "d", reference, INFO, scene)
    assert node_count(scene) == before


def test_an_roi_crop_moves_boxes_and_instances_onto_the_whole_volume(tmp_path, scene):
    matrix = np.diag([*SPACING, 1.0])
    matrix[:3, 3] = (5.0, -7.0, 11.0)
    volume = add_volume(scene, np.zeros((16, 18, 20), np.float32), matrix, "big")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "my ROI")
    start = np.array([3, 2, 4])  # (i, j, k) of the crop; SHAPE[::-1] voxels from there
    roi.SetCenter(*(matrix @ [*(start + (np.array(SHAPE[::-1]) - 1) / 2.0), 1.0])[:3])
    roi.SetSize(*(np.array(SHAPE[::-1]) * np.array(SPACING)))
    crop = roi_crop(volume, roi)
    assert crop.start == tuple(start) and crop.size == SHAPE[::-1]
    crop_matrix = matrix.copy()
    crop_matrix[:3, 3] = (matrix @ [*start, 1.0])[:3]  # the crop's voxel (0, 0, 0)
    write_prediction(tmp_path / "out", crop_image(image_from_volume_node(volume), crop), matrix=crop_matrix)
    result = MaskMedLogic().import_result(tmp_path / "out", volume, INFO, scene, crop=crop)

    _, instances = _maps()
    whole = np.zeros((16, 18, 20), np.uint16)
    whole[start[2] : start[2] + SHAPE[0], start[1] : start[1] + SHAPE[1], start[0] : start[0] + SHAPE[2]] = instances
    np.testing.assert_array_equal(exported_labels(result.instances.segmentation_node, ["lesion 1", "lesion 2"],
                                                  volume, scene), whole)  # fmt: skip
    box = MaskMedLogic.instances(result)["boxes"][0]
    assert box["index_min"] == (np.array(_mask_box(instances, 1)["index_min"]) + start).tolist()
    mask_roi = result.instances.box_nodes[(1, "mask")]
    k, j, i = np.nonzero(whole == 1)
    centre_ijk = [(i.min() + i.max()) / 2, (j.min() + j.max()) / 2, (k.min() + k.max()) / 2, 1.0]
    np.testing.assert_allclose(mask_roi.GetCenter(), (matrix @ centre_ijk)[:3], atol=1e-6)


def test_boxes_on_a_mirrored_grid(tmp_path, scene):
    """A grid whose axes are left-handed (one axis flipped): an ROI's orientation must still be a rotation."""
    matrix = MATRIX @ np.diag([1.0, 1.0, -1.0, 1.0])
    assert np.linalg.det(matrix[:3, :3]) < 0
    volume = add_volume(scene, np.zeros(SHAPE, np.float32), matrix, "mirrored")
    write_prediction(tmp_path / "out", volume, matrix=matrix)
    result = MaskMedLogic().import_result(tmp_path / "out", volume, INFO, scene)
    _, instances = _maps()
    for instance_id in (1, 2):
        roi = result.instances.box_nodes[(instance_id, "mask")]
        rotation = _matrix(roi.GetObjectToNodeMatrix())[:3, :3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        assert_roi_is_voxel_box(roi, instances == instance_id, volume, matrix)
    np.testing.assert_array_equal(
        exported_labels(result.instances.segmentation_node, ["lesion 1", "lesion 2"], volume, scene), instances
    )
