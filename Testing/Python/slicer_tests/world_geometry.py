"""World-coordinate measurements on real MRML for the Slicer tests: where segments, volumes and arrays are.

Computed from the nodes' own matrices (IJK-to-RAS, the segment's image-to-node matrix and the parent
transform to world), independently of MaskMedSlicerLib and of Slicer's exporters.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util.numpy_support import vtk_to_numpy


def _array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_to_world(node) -> np.ndarray:
    """(4, 4) matrix of a node's parent transforms (identity without one)."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    assert transform.GetMatrixTransformToWorld(matrix)
    return _array(matrix)


def world_centroid(mask: np.ndarray, ijk_to_world: np.ndarray) -> np.ndarray:
    """(3,) world centroid of the True voxels of a (D, H, W) mask on a grid with the given IJK-to-world matrix."""
    k, j, i = np.nonzero(mask)
    assert len(i), "empty mask"
    points = np.stack([i, j, k, np.ones_like(i)]).astype(np.float64)
    return (ijk_to_world @ points)[:3].mean(axis=1)


def volume_ijk_to_world(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return node_to_world(volume_node) @ _array(matrix)


def segment_world_centroid(segmentation_node, segment_id: str) -> np.ndarray:
    """World centroid of a segment, from its own binary labelmap and the segmentation's transform."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)  # image (IJK) -> the segmentation node's coordinates
    extent = image.GetExtent()
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    mask = values == segment.GetLabelValue()
    offset = np.eye(4)
    offset[:3, 3] = extent[::2]  # array voxel (0, 0, 0) is IJK (extent[0], extent[2], extent[4])
    return world_centroid(mask, node_to_world(segmentation_node) @ _array(matrix) @ offset)


def add_translation(scene, offset, name: str = "shift"):
    """A linear transform node translating by ``offset`` (mm)."""
    matrix = vtk.vtkMatrix4x4()
    for axis in range(3):
        matrix.SetElement(axis, 3, float(offset[axis]))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    transform.SetMatrixTransformToParent(matrix)
    return transform
