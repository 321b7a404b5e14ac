"""Instance results in the MRML scene: a segmentation of instances, a markups ROI per box, two tables.

:func:`add_instance_nodes` puts :func:`~MaskMedSlicerLib.instance_results.read_instance_outputs`' checked
outputs into the scene, every node marked with the attribute :data:`RESULT_ATTRIBUTE` = the segmented
volume's node ID (and :data:`ROLE_ATTRIBUTE`):

- a **second segmentation node** ``<volume> instances``: one segment per instance ordered by id, segment ID
  ``<class> <id>`` (``lesion 1``), name ``lesion 1 (score 0.93)`` (a segment has no description field), tags
  ``MaskMed.score``, ``MaskMed.instanceId`` and ``MaskMed.className``, a distinct colour each. It is a node of
  its own rather than per-instance segments in the semantic node: the semantic node's segments line up with
  the model's classes (a re-run replaces them by class name; the query tables and the Inspect section refer
  to them; the user may have chosen an existing node as output), and the instances can be shown, hidden or
  removed as one. No node is added for a model with instance classes that found none (the table says so);
- one **locked markups ROI** per box, ``lesion 1 (mask box)`` / ``lesion 1 (head box)``, in the instance's
  colour, centred at the box centre (LPS -> RAS flips x and y), sized ``size_mm`` along the image axes and
  oriented along them (the direction matrix in RAS; a mirrored grid's third axis is negated, which leaves the
  box unchanged), under the volume's parent transform like the segmentation. Mask boxes are shown; head boxes
  (the box head's regression, kept for comparison) are hidden: show them with the eye icon in the Data module.
  Each ROI's description gives the score and the voxel range (on the whole volume's grid);
- table ``<volume> instances``: id, class, score, volume (mL), voxels, query (-1: none), mask box centre
  (R, A, S) and size (I, J, K), NaN without a mask box;
- table ``<volume> case classification`` (with case tasks): task, predicted, probability (of the prediction)
  and ``p(<class>)`` for every class of every task, NaN where a task has no such class.

Re-running: a new result with instance outputs removes the previous instance nodes of the **same volume**
(found by the attribute, so nodes the user made are never touched; edits made inside our nodes go with them),
after the new ones are in place. A result without instance outputs adds nothing and leaves them alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import slicer
import vtk

from MaskMedSlicerLib.colors import default_label_colors
from MaskMedSlicerLib.instance_results import RAS_FROM_LPS, CaseTask, InstanceBox, InstanceOutputs
from MaskMedSlicerLib.query_views import _store_table
from MaskMedSlicerLib.roi import RoiCrop, mask_outside
from MaskMedSlicerLib.scene_setup import remove_nodes, removed_on_error
from MaskMedSlicerLib.segmentation_io import labelmap_to_segmentation, place_beside
from MaskMedSlicerLib.terminology import terminology_entry

RESULT_ATTRIBUTE = "MaskMed.instanceResult"  # value: the segmented volume's node ID
ROLE_ATTRIBUTE = "MaskMed.instanceRole"  # segmentation | box | instances | case classification
SCORE_TAG = "MaskMed.score"


@dataclass
class InstanceNodes:
    """What :func:`add_instance_nodes` added for one result.

    Attributes:
        outputs: the checked outputs (box indices on the whole volume's grid; the instance map dropped).
        segmentation_node: ``<volume> instances`` (one segment per instance), or None without instances.
        box_nodes: (instance id, source) -> markups ROI node.
        instances_table: ``<volume> instances``, or None without instances.
        classification_table: ``<volume> case classification``, or None without case tasks.
    """

    outputs: InstanceOutputs
    segmentation_node: object = None
    box_nodes: dict[tuple[int, str], object] = field(default_factory=dict)
    instances_table: object = None
    classification_table: object = None

    def nodes(self) -> list:
        """The present nodes, the segmentation node first."""
        nodes = [self.segmentation_node, *self.box_nodes.values(), self.instances_table, self.classification_table]
        return [n for n in nodes if n is not None]

    def as_dict(self) -> dict:
        """:meth:`InstanceOutputs.as_dict` with each box's ``roi_node_id``."""
        data = self.outputs.as_dict()
        for box in data["boxes"]:
            node = self.box_nodes.get((box["instance"], box["source"]))
            box["roi_node_id"] = node.GetID() if node is not None else None
        return data


def instance_result_nodes(scene, reference_volume_node=None) -> list:
    """The nodes MaskMed added for instance results (of ``reference_volume_node`` only, when given)."""
    wanted = reference_volume_node.GetID() if reference_volume_node is not None else None
    nodes = []
    for n in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(n)
        value = node.GetAttribute(RESULT_ATTRIBUTE)
        if value is not None and (wanted is None or value == wanted):
            nodes.append(node)
    return nodes


def add_instance_nodes(
    outputs: InstanceOutputs, reference_volume_node, scene, crop: RoiCrop | None = None, use_terminology=False
) -> InstanceNodes | None:
    """Put a case's instance outputs into the scene, replacing the previous ones of the same volume.

    Args:
        outputs: from :func:`read_instance_outputs` (on the crop's grid when ``crop`` is given).
        reference_volume_node: the segmented volume (geometry, parent transform, subject-hierarchy folder).
        scene: the ``vtkMRMLScene``.
        crop: the ROI crop the prediction was made in: instance voxels outside the ROI are dropped and box
            indices moved to the whole volume's grid.
        use_terminology: tag each instance segment with its class's standard term, where one is known.

    Returns:
        The added nodes, or None (nothing added or removed) when the outputs are absent.

    Raises:
        MaskMedSlicerError: Slicer could not import the instance map; the scene is then as before.
    """
    if not outputs.present:
        return None
    previous = instance_result_nodes(scene, reference_volume_node)
    if crop is not None:
        outputs = outputs.shifted(crop.start)
    base = reference_volume_node.GetName()
    result = InstanceNodes(outputs)
    with removed_on_error(scene):
        colors = {}
        if outputs.instances:
            result.segmentation_node, colors = _instance_segmentation(
                outputs, reference_volume_node, scene, crop, f"{base} instances", use_terminology
            )
        if "instances" in outputs.present:  # also when none was found: an empty table says so
            result.instances_table = _instances_table(outputs, scene, f"{base} instances")
        for box in outputs.boxes:
            result.box_nodes[(box.instance, box.source)] = _box_node(box, outputs, colors, reference_volume_node, scene)
        if outputs.case_tasks:
            result.classification_table = _classification_table(
                outputs.case_tasks, scene, f"{base} case classification"
            )
        roles = [(result.segmentation_node, "segmentation"), (result.instances_table, "instances")]
        roles += [(node, "box") for node in result.box_nodes.values()]
        for node, role in [*roles, (result.classification_table, "case classification")]:
            if node is not None:
                node.SetAttribute(RESULT_ATTRIBUTE, reference_volume_node.GetID())
                node.SetAttribute(ROLE_ATTRIBUTE, role)
                place_beside(node, reference_volume_node, scene)
    remove_nodes(scene, previous)  # only once everything new is in place
    result.outputs = replace(outputs, instance_map=None)  # the segments hold it now; free the voxels
    return result


def _instance_segmentation(outputs, reference, scene, crop, name: str, use_terminology: bool):
    """The ``<volume> instances`` node: instance ids renumbered 1..N in id order and imported as segments."""
    import SimpleITK as sitk

    ids = [i.id for i in outputs.instances]
    segment_ids = [i.segment_id for i in outputs.instances]
    lookup = np.zeros(max(ids, default=0) + 1, np.uint16)  # instance id -> position 1..N
    lookup[ids] = np.arange(1, len(ids) + 1)
    renumbered = sitk.GetImageFromArray(lookup[sitk.GetArrayViewFromImage(outputs.instance_map)])
    renumbered.CopyInformation(outputs.instance_map)
    if crop is not None:
        renumbered = mask_outside(renumbered, crop)
    names = ["background", *segment_ids]
    colors = default_label_colors(names)
    node = labelmap_to_segmentation(
        renumbered, reference, names, scene, colors=colors, name=name, source=f"instance map of {outputs.source}"
    )
    segmentation = node.GetSegmentation()
    entry_tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    for instance in outputs.instances:
        segment = segmentation.GetSegment(instance.segment_id)
        segment.SetName(f"{instance.segment_id} (score {instance.score:.2f})")
        segment.SetTag(SCORE_TAG, f"{instance.score:.6g}")
        segment.SetTag("MaskMed.instanceId", str(instance.id))
        segment.SetTag("MaskMed.className", instance.class_name)
        if use_terminology and terminology_entry(instance.class_name):
            segment.SetTag(entry_tag, terminology_entry(instance.class_name))
    return node, dict(zip(ids, colors[1:]))


def _box_node(box: InstanceBox, outputs: InstanceOutputs, colors: dict, reference, scene):
    """A locked ROI with the box's centre and size, oriented along the image axes."""
    instance = next(i for i in outputs.instances if i.id == box.instance)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{instance.segment_id} ({box.source} box)")
    axes = RAS_FROM_LPS @ np.reshape(outputs.instance_map.GetDirection(), (3, 3))  # columns: I, J, K in RAS
    if np.linalg.det(axes) < 0:  # a mirrored grid: an ROI's axes must be a rotation; the box is symmetric
        axes[:, 2] *= -1.0
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(axes[r, c]))
        matrix.SetElement(r, 3, box.center_ras[r])
    roi.SetAndObserveObjectToNodeMatrix(matrix)
    roi.SetSize(*box.size_mm)
    roi.SetLocked(True)
    roi.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    roi.SetDescription(
        f"{instance.segment_id}, score {instance.score:.3f}: {box.source} box, voxels {list(box.index_min)} to "
        f"{list(box.index_max)} of '{reference.GetName()}'"
    )
    roi.SetAttribute("MaskMed.instanceId", str(box.instance))
    roi.SetAttribute("MaskMed.boxSource", box.source)
    roi.SetAttribute(SCORE_TAG, f"{instance.score:.6g}")
    roi.CreateDefaultDisplayNodes()
    display = roi.GetDisplayNode()
    if display is not None:
        color = colors.get(box.instance, (1.0, 1.0, 0.0))
        display.SetSelectedColor(*color)
        display.SetColor(*color)
        display.SetVisibility(box.source == "mask")
    return roi


def _table(columns: list[tuple[str, str, list]], scene, name: str):
    """A locked table node from (title, ``int`` | ``float`` | ``str``, values) columns."""
    table = vtk.vtkTable()
    arrays = {"int": vtk.vtkIntArray, "float": vtk.vtkDoubleArray, "str": vtk.vtkStringArray}
    for title, kind, values in columns:
        array = arrays[kind]()
        array.SetName(title)
        for value in values:
            array.InsertNextValue(value)
        table.AddColumn(array)
    return _store_table(table, scene, name)


def _instances_table(outputs: InstanceOutputs, scene, name: str):
    """One row per instance: id, class, score, volume, voxels, query (-1: none), mask box centre (RAS) and size."""
    instances = outputs.instances
    mask_boxes = {b.instance: b for b in outputs.boxes if b.source == "mask"}
    nan = (math.nan,) * 3
    centres = [mask_boxes[i.id].center_ras if i.id in mask_boxes else nan for i in instances]
    sizes = [mask_boxes[i.id].size_mm if i.id in mask_boxes else nan for i in instances]
    columns = [
        ("id", "int", [i.id for i in instances]),
        ("class", "str", [i.class_name for i in instances]),
        ("score", "float", [i.score for i in instances]),
        ("volume (mL)", "float", [i.volume_ml for i in instances]),
        ("voxels", "int", [i.voxel_count for i in instances]),
        ("query", "int", [-1 if i.query is None else i.query for i in instances]),
    ]
    columns += [(f"mask box centre {a} (mm)", "float", [c[n] for c in centres]) for n, a in enumerate("RAS")]
    columns += [(f"mask box size {a} (mm)", "float", [s[n] for s in sizes]) for n, a in enumerate("IJK")]
    return _table(columns, scene, name)


def _classification_table(tasks: tuple[CaseTask, ...], scene, name: str):
    """One row per task: task, predicted, probability (of the prediction), ``p(<class>)`` per class seen."""
    classes = list(dict.fromkeys(c for t in tasks for c in t.probabilities))
    columns = [
        ("task", "str", [t.task for t in tasks]),
        ("predicted", "str", [t.predicted for t in tasks]),
        ("probability", "float", [t.probability for t in tasks]),
    ]
    columns += [(f"p({c})", "float", [t.probabilities.get(c, math.nan) for t in tasks]) for c in classes]
    return _table(columns, scene, name)
