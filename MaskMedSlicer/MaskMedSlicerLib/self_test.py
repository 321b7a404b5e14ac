"""Checks the module's self-test runs inside Slicer by default: no download, no PyTorch.

``MaskMedSlicerTest`` (in the module file) calls :func:`check_library_on_scene` on Slicer's own scene; the
pytest suite calls it on a slicer-core scene, so the default self-test is itself tested outside Slicer.
It covers what the application adds nothing to: the demo phantom, a label map imported under a parent
transform with standard terminology, an ROI crop, and the cleanup of a result when the scene closes.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from MaskMedSlicerLib.roi import roi_crop
from MaskMedSlicerLib.sample_data import load_demo_phantom
from MaskMedSlicerLib.scene_setup import ensure_segmentation_converters
from MaskMedSlicerLib.segmentation_io import labelmap_to_segmentation

PHANTOM_NAMES = ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"MaskMed self-test: {message}")


def exported_labels(segmentation_node, segment_ids, reference_volume_node, scene) -> np.ndarray:
    """Segments exported by Slicer's own logic onto the reference volume's grid, segment n as value n + 1."""
    segmentation = segmentation_node.GetSegmentation()
    if all(_is_empty(segmentation.GetSegment(s)) for s in segment_ids):  # Slicer's exporter refuses these
        return np.zeros(slicer.util.arrayFromVolume(reference_volume_node).shape, np.uint8)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MaskMed self-test export")
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node
        )
        _check(ok, "Slicer could not export the segments")
        return slicer.util.arrayFromVolume(labelmap).copy()
    finally:
        scene.RemoveNode(labelmap)


def _is_empty(segment) -> bool:
    from vtk.util.numpy_support import vtk_to_numpy

    image = segment.GetRepresentation("Binary labelmap")
    scalars = image.GetPointData().GetScalars() if image is not None else None
    return scalars is None or not (vtk_to_numpy(scalars) == segment.GetLabelValue()).any()


def check_library_on_scene(scene) -> None:
    """Run the PyTorch-free checks on ``scene`` (it is left with the nodes they add).

    Raises:
        AssertionError: naming what went wrong.
    """
    import SimpleITK as sitk

    ensure_segmentation_converters()
    volume, labels = load_demo_phantom(scene)
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 50.0)
    shift.SetElement(1, 3, -20.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MaskMed self-test shift")
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())

    segmentation = labelmap_to_segmentation(labels, volume, PHANTOM_NAMES, scene, use_terminology=True)
    _check(
        segmentation.GetTransformNodeID() == transform.GetID(), "the segmentation is not under the volume's transform"
    )
    got = exported_labels(segmentation, PHANTOM_NAMES[1:], volume, scene)
    _check(np.array_equal(got, sitk.GetArrayFromImage(labels)), "the segments are not where the label map is")
    left = segmentation.GetSegmentation().GetSegment("kidney_left")
    _check(left.GetName() == "left kidney", f"standard name not applied ({left.GetName()!r})")

    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)  # world coordinates, transform included
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MaskMed self-test ROI")
    roi.SetCenterWorld([(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)])
    roi.SetSize(60.0, 60.0, 60.0)
    crop = roi_crop(volume, roi)
    spacing = volume.GetSpacing()
    expected = [int(60.0 // s) for s in spacing]
    _check(all(abs(n - e) <= 1 for n, e in zip(crop.size, expected)), f"ROI crop {crop.size}, expected ~{expected}")
    _check(bool(crop.inside.all()) and not crop.clipped, "an ROI aligned with the volume must be kept whole")


def check_segmentation(task, reference_labels, min_dice: float) -> list[float]:
    """Check a finished :class:`SegmentTask` run against reference labels, then its Inspect data and cleanup.

    Args:
        task: a ``SegmentTask`` whose last run succeeded (run with ``save_queries``).
        reference_labels: SimpleITK label image on the segmented volume's grid (value k = class k).
        min_dice: the lowest Dice accepted for each class.

    Returns:
        The Dice of each class, in class order.

    Raises:
        AssertionError: naming the class, its Dice, or what was left behind.
    """
    import SimpleITK as sitk

    result = task.result
    scene = result.segmentation_node.GetScene()
    names = result.queries.label_names[1:]
    got = exported_labels(result.segmentation_node, names, result.reference_volume_node, scene)
    expected = sitk.GetArrayFromImage(reference_labels)
    dices = []
    for value, name in enumerate(names, start=1):
        a, b = got == value, expected == value
        dices.append(2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1))
        _check(dices[-1] > min_dice, f"{name}: Dice {dices[-1]:.3f} (expected > {min_dice})")
    best = max(result.queries.queries, key=lambda q: q["score"])["index"]
    overlay, segment_id, _chart = task.inspection.show_query(best)
    probabilities = slicer.util.arrayFromVolume(overlay)
    _check(0.0 <= probabilities.min() and probabilities.max() <= 1.0, "query overlay outside 0..1")
    _check(result.segmentation_node.GetSegmentation().GetSegment(segment_id) is not None, "no query segment")
    tables = result.tables()
    task.clear_result()
    _check(all(t.GetScene() is None for t in tables) and overlay.GetScene() is None, "inspection nodes left")
    return dices
