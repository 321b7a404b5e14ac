"""A MaskMed label map (file or image) -> one named, coloured segment per class in a segmentation node.

Segment IDs equal the class names (``segmentation.GetSegment("liver")``), so a re-run into the same
node replaces its MaskMed segments and keeps any other segment the user made. Classes that the
prediction does not contain get an **empty** segment by default (``keep_empty=True``): the segment
list is then the same for every case and lines up with the model's classes and the query tables.

Transforms: a label map is in the segmented volume's *local* coordinates (the child wrote it from the
volume's own geometry). The temporary label map node is therefore put under the volume's parent
transform, like the segmentation node, so that Slicer's import sees no transform between the two and
copies voxels unchanged; a label map without that transform would be moved by the inverse of the
volume's transform and land twice the transform away from the volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk

from MaskMedSlicerLib.colors import Color, default_label_colors
from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.scene_setup import ensure_segmentation_converters, remove_nodes, removed_on_error
from MaskMedSlicerLib.terminology import apply_standard_terminology
from MaskMedSlicerLib.volume_io import read_image, update_volume_node_from_image

_SLICER_UNSET_COLOR = (0.5, 0.5, 0.5)
_NEAR_GREY = (0.502, 0.502, 0.502)

__all__ = ["add_binary_segment", "default_label_colors", "labelmap_file_to_segmentation", "labelmap_to_segmentation"]


def _check_colors(colors: Sequence[Color], label_names: Sequence[str]) -> list[Color]:
    """Accept one colour per label value (K, background ignored) or per foreground class (K - 1)."""
    K = len(label_names)
    colors = [tuple(float(v) for v in c) for c in colors]
    if len(colors) == K - 1:
        colors = [(0.0, 0.0, 0.0), *colors]
    if len(colors) != K:
        raise MaskMedSlicerError(
            f"got {len(colors)} colours for {K} labels {list(label_names)}; give one per label (K) or per "
            "foreground class (K - 1)"
        )
    for name, color in zip(label_names, colors):
        if len(color) != 3 or not all(0.0 <= v <= 1.0 for v in color):
            raise MaskMedSlicerError(f"colour of '{name}' is {color}; expected three values in 0..1")
    # Slicer reads exactly (0.5, 0.5, 0.5) as "no colour set" and picks a random one: nudge it.
    return [_NEAR_GREY if c == _SLICER_UNSET_COLOR else c for c in colors]


def _check_labels(array: np.ndarray, label_names: Sequence[str], source: str) -> np.ndarray:
    """Label values present in ``array`` (D, H, W); raises when one has no name."""
    if not np.issubdtype(array.dtype, np.integer):
        raise MaskMedSlicerError(f"{source} has voxel type {array.dtype}; expected integers")
    present = np.unique(array)
    unknown = [int(v) for v in present if v < 0 or v >= len(label_names)]
    if unknown:
        raise MaskMedSlicerError(
            f"{source} holds values {unknown} that are not in the model's labels 0..{len(label_names) - 1} "
            f"{list(label_names)}"
        )
    return present


def labelmap_file_to_segmentation(path: str | os.PathLike, reference_volume_node, label_names, scene, **options):
    """Import a label map file (value k = ``label_names[k]``); see :func:`labelmap_to_segmentation`."""
    path = Path(path)
    return labelmap_to_segmentation(
        read_image(path), reference_volume_node, label_names, scene, source=f"label map {path}", **options
    )


def labelmap_to_segmentation(
    image,
    reference_volume_node,
    label_names: Sequence[str],
    scene,
    colors: Sequence[Color] | None = None,
    segmentation_node=None,
    name: str = "MaskMed segmentation",
    use_terminology: bool = False,
    keep_empty: bool = True,
    create_closed_surface: bool = True,
    source: str = "label map",
):
    """Import a label map image (value k = ``label_names[k]``, 0 = background) as segments.

    Args:
        image: SimpleITK integer image in the reference volume's local coordinates (LPS geometry); it may
            cover part of the volume's grid (an ROI crop): voxels outside it are background.
        reference_volume_node: the segmented volume; its geometry becomes the segmentation's reference
            geometry (the label map is resampled onto it if the two differ) and its parent transform
            the segmentation's.
        label_names: K names, index = label value, entry 0 = background (skipped).
        scene: the ``vtkMRMLScene``.
        colors: RGB in 0..1, per label value (K) or per foreground class (K - 1); default
            :func:`~MaskMedSlicerLib.colors.default_label_colors`.
        segmentation_node: update this node (segments named like a class are replaced, others kept);
            default: a new node called ``name``.
        name: name of a new segmentation node.
        use_terminology: for classes with a standard term (:mod:`.terminology`): set the terminology tag and
            Slicer's standard segment name and colour (the segment ID stays the class name).
        keep_empty: add an empty segment for classes absent from the prediction (else skip them).
        create_closed_surface: build the 3D surface so the segments show in 3D views (skipped when the label map
            is empty).
        source: how error messages name the label map.

    Returns:
        The segmentation node, with display node.

    Raises:
        MaskMedSlicerError: label values without a name, duplicate names, bad colours. On error nothing
        this call added stays in the scene.
    """
    import SimpleITK as sitk

    label_names = [str(n) for n in label_names]
    if len(label_names) < 2:
        raise MaskMedSlicerError(f"label_names must hold background and at least one class, got {label_names}")
    if len(set(label_names)) != len(label_names):
        raise MaskMedSlicerError(f"label_names has duplicates: {label_names}")
    colors = _check_colors(colors if colors is not None else default_label_colors(label_names), label_names)
    present = set(_check_labels(sitk.GetArrayViewFromImage(image), label_names, source).tolist())
    ensure_segmentation_converters()

    with removed_on_error(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} labels")
        try:
            update_volume_node_from_image(labelmap, image)
            labelmap.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
            segmentation_node = _prepare_segmentation_node(segmentation_node, scene, name, reference_volume_node)
            segmentation = segmentation_node.GetSegmentation()
            segment_ids = vtk.vtkStringArray()  # entry k-1 receives label value k
            for k in range(1, len(label_names)):
                segment_id = label_names[k]
                if segmentation.GetSegment(segment_id) is not None:
                    segmentation.RemoveSegment(segment_id)
                segmentation.AddEmptySegment(segment_id, label_names[k], colors[k])
                segment_ids.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, segmentation_node, segment_ids
            )
            if not ok:
                raise MaskMedSlicerError(f"Slicer could not import {source} into '{segmentation_node.GetName()}'")
        finally:
            remove_nodes(scene, [labelmap])
        for k in range(1, len(label_names)):
            if k not in present and not keep_empty:
                segmentation.RemoveSegment(label_names[k])
            elif use_terminology:
                apply_standard_terminology(segmentation.GetSegment(label_names[k]), label_names[k])
        # Nothing to surface when every class is empty; VTK's surface filter also fails (and logs errors) on an
        # empty one-slice label map, the usual result for a 2D image without findings.
        if create_closed_surface and any(v > 0 for v in present):
            segmentation_node.CreateClosedSurfaceRepresentation()
    return segmentation_node


def _prepare_segmentation_node(segmentation_node, scene, name: str, reference_volume_node):
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    elif segmentation_node.GetScene() is not scene:
        raise MaskMedSlicerError(f"segmentation node '{segmentation_node.GetName()}' is not in the given scene")
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation_node.SetNodeReferenceID(
        segmentation_node.GetReferenceImageGeometryReferenceRole(), reference_volume_node.GetID()
    )
    segmentation_node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
    place_beside(segmentation_node, reference_volume_node, scene)
    return segmentation_node


def place_beside(node, reference_node, scene) -> None:
    """Put ``node`` in the subject-hierarchy folder of ``reference_node`` (no-op where nodes have no items)."""
    sh = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")  # never create one here
    if sh is None:
        return
    item, reference_item = sh.GetItemByDataNode(node), sh.GetItemByDataNode(reference_node)
    if item and reference_item:
        sh.SetItemParent(item, sh.GetItemParent(reference_item))


def add_binary_segment(
    mask_image, segmentation_node, segment_id: str, name: str, color: Color, scene, reference_volume_node=None
) -> str:
    """Add (or replace) one segment from a binary SimpleITK image (non-zero = inside).

    The mask is in the local coordinates of ``reference_volume_node`` (default: of the segmentation node)
    and may cover part of its grid; it is resampled onto the segmentation's reference geometry if the
    two grids differ.

    Returns:
        The segment ID.
    """
    import SimpleITK as sitk

    mask = sitk.Cast(sitk.NotEqual(mask_image, 0), sitk.sitkUInt8)
    color = _check_colors([color], ["segment"])[0]
    ensure_segmentation_converters()
    segmentation = segmentation_node.GetSegmentation()
    with removed_on_error(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} mask")
        try:
            update_volume_node_from_image(labelmap, mask)
            frame = reference_volume_node if reference_volume_node is not None else segmentation_node
            labelmap.SetAndObserveTransformNodeID(frame.GetTransformNodeID())
            if segmentation.GetSegment(segment_id) is not None:
                segmentation.RemoveSegment(segment_id)
            segmentation.AddEmptySegment(segment_id, name, tuple(float(c) for c in color))
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, segmentation_node, ids
            ):
                segmentation.RemoveSegment(segment_id)
                raise MaskMedSlicerError(f"Slicer could not add segment '{name}' to '{segmentation_node.GetName()}'")
        finally:
            remove_nodes(scene, [labelmap])
    return segment_id
