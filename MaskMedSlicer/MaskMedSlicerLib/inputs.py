"""What a segmentation run is given, checked before anything is written or started.

:func:`check_inputs` is the one place the volumes are checked (node type, scene, one voxel grid with the
same directions); :func:`resolve_model` turns a path or a bundled model's name into a checkpoint path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.models import bundled_demo_model
from MaskMedSlicerLib.volume_io import ijk_to_ras


def node_label(node) -> str:
    return f"volume '{node.GetName()}'"


def check_inputs(volume_nodes, scene):
    """Validated (list of scalar volume nodes on one voxel grid, scene); raises MaskMedSlicerError."""
    if volume_nodes is None:
        raise MaskMedSlicerError("no input volume selected")
    nodes = list(volume_nodes) if isinstance(volume_nodes, (list, tuple)) else [volume_nodes]
    if not nodes or any(n is None for n in nodes):
        raise MaskMedSlicerError("no input volume selected (one volume node per model channel is needed)")
    for node in nodes:
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise MaskMedSlicerError(f"input {node.GetName()} is a {node.GetClassName()}, not a scalar volume")
    scene = scene if scene is not None else nodes[0].GetScene()
    if scene is None:
        raise MaskMedSlicerError(f"{node_label(nodes[0])} is in no scene; pass scene=")
    for node in nodes:
        if node.GetScene() is not scene:
            raise MaskMedSlicerError(f"{node_label(node)} is not in the given scene")
    first = nodes[0]
    dims = first.GetImageData().GetDimensions() if first.GetImageData() else None
    for node in nodes[1:]:
        same = node.GetImageData() is not None and node.GetImageData().GetDimensions() == dims
        if not same or not np.allclose(ijk_to_ras(node), ijk_to_ras(first), rtol=1e-4, atol=1e-3):
            raise MaskMedSlicerError(
                f"{node_label(node)} does not share the voxel grid of {node_label(first)}; resample it onto "
                f"'{first.GetName()}' first (e.g. Resample Scalar/Vector/DWI Volume)"
            )
    return nodes, scene


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A checkpoint file, run folder or bundled model name (e.g. ``"hippocampus"``) -> its path; None: the demo."""
    if model is None:
        return bundled_demo_model()
    from MaskMedCore.bundled_models import resolve_model as resolve
    from MaskMedCore.errors import MaskMedError

    try:
        return resolve(model)
    except MaskMedError as exc:
        raise MaskMedSlicerError(str(exc)) from None
