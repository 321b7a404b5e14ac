"""Helpers shared by the Slicer-logic tests (a uniquely named module: ``conftest`` is ambiguous here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[3]
# MaskMedSlicerLib lives in the Slicer module folder, which is not a pip-installed package.
sys.path.insert(0, str(REPO_ROOT / "MaskMedSlicer"))

SMALL_PHANTOM_SHAPE = (24, 48, 48)  # same as the parent conftest's phantom_dataset


def oblique_ijk_to_ras(spacing=(0.7, 1.3, 2.9), origin=(10.0, -20.0, 30.0), angles=(0.5, 0.3, -0.2)) -> np.ndarray:
    """A (4, 4) IJK-to-RAS matrix: rotations about the three axes (radians), anisotropic spacing."""
    a, b, c = angles
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx @ ry @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def add_volume(scene, array: np.ndarray, ijk_to_ras: np.ndarray, name: str = "volume", label: bool = False):
    """A scalar (or label map) volume node from a (D, H, W) array and a (4, 4) IJK-to-RAS matrix."""
    import slicer
    from MaskMedSlicerLib.volume_io import set_ijk_to_ras

    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    set_ijk_to_ras(node, ijk_to_ras)
    if not label:  # a label display node wants Slicer's colour tables, which slicer-core lacks
        node.CreateDefaultDisplayNodes()
    return node


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()
