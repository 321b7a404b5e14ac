"""What a segmentation run is given, checked before anything is written or started.

:func:`check_inputs` is the one place the volumes are checked (node type, scene, one voxel grid with the
same directions); :func:`check_channels` matches them to the model's channels (a colour volume, e.g. an RGB
photo that Slicer loaded as a one-slice vector volume, gives R, G and B) and :func:`nodes_for_model` picks
a panel's volumes for a model; :func:`resolve_model` turns a path or a bundled model's name into a
checkpoint path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.models import bundled_demo_model
from MaskMedSlicerLib.volume_io import colour_channels, ijk_to_ras


def node_label(node) -> str:
    return f"volume '{node.GetName()}'"


def check_inputs(volume_nodes, scene):
    """Validated (list of scalar or colour volume nodes on one voxel grid, scene); raises MaskMedSlicerError."""
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


def check_channels(nodes, channel_names, model_title: str) -> int:
    """The number of model channels ``nodes`` give (1 per scalar volume, 3 per colour volume).

    Raises:
        MaskMedSlicerError: it is not ``len(channel_names)``; the message names the volumes and what each gives.
    """
    counts = [colour_channels(node) for node in nodes]
    total = sum(n for n, _ in counts)
    expected = len(channel_names)
    if total == expected:
        return total
    names = [n.GetName() for n in nodes]
    if all(n == 1 for n, _ in counts):
        raise MaskMedSlicerError(
            f"model {model_title} needs {expected} input volume(s) {list(channel_names)}, got {len(nodes)}: {names}"
        )
    given = ", ".join(f"'{node.GetName()}' ({kind}: {n})" for node, (n, kind) in zip(nodes, counts))
    raise MaskMedSlicerError(
        f"model {model_title} needs {expected} input channel(s) {list(channel_names)}, but the volumes give {total}: "
        f"{given}; give one colour volume for a model of R, G, B channels, or one grey-value volume per channel"
    )


def nodes_for_model(selected_nodes, num_channels: int) -> list:
    """The volumes a panel with one selector per model channel passes to the logic.

    A colour volume in the first selector that gives all ``num_channels`` channels (an RGB photo for an
    R, G, B model) is passed alone; otherwise the first ``num_channels`` selections, in order.
    """
    selected = list(selected_nodes)
    first = selected[0] if selected else None
    if first is not None and num_channels > 1 and first.GetImageData() is not None:
        comps = first.GetImageData().GetNumberOfScalarComponents()
        if comps > 1 and colour_channels(first)[0] == num_channels:
            return [first]
    return selected[:num_channels]


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
