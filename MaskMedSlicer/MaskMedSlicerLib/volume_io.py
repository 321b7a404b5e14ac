"""Scalar volume node <-> image file, keeping the full voxel-to-world geometry.

Slicer stores a volume's geometry as one IJK-to-RAS matrix; ITK/SimpleITK files store spacing,
origin and a direction matrix in LPS. The two are converted exactly, oblique directions included:

    IJKToRAS[:3, :3] = diag(-1, -1, 1) @ direction_lps @ diag(spacing)
    IJKToRAS[:3, 3]  = diag(-1, -1, 1) @ origin_lps

Arrays are in MRML/SimpleITK array order ``(D, H, W)`` = (K, J, I). A volume's parent transform is
not applied (as with Slicer's own writers): the file holds the volume's local geometry, and readers
here put new nodes under the reference volume's parent transform instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import numpy as np
import slicer
import vtk

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.scene_setup import remove_nodes

# Endings SimpleITK writes/reads by extension; compound endings first.
_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def file_ending(path: str | os.PathLike) -> str:
    """``.nii.gz`` for ``a/b.nii.gz``; raises MaskMedSlicerError for endings SimpleITK is not used for here."""
    name = Path(path).name.lower()
    for ending in _ENDINGS:
        if name.endswith(ending):
            return ending
    raise MaskMedSlicerError(f"{path}: unsupported image file ending; use one of {', '.join(_ENDINGS)}")


def ijk_to_ras(volume_node) -> np.ndarray:
    """The node's IJK-to-RAS matrix: (4, 4) float64."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def geometry_to_lps(ijk_to_ras_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an IJK-to-RAS matrix into ITK ``(spacing (3,), origin_lps (3,), direction_lps (3, 3))``.

    ``direction_lps`` columns are the unit I, J, K axes (ITK convention, row-major when flattened).
    """
    linear = np.asarray(ijk_to_ras_matrix, np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise MaskMedSlicerError(f"IJK-to-RAS matrix has a zero-length axis (spacing {spacing.tolist()})")
    direction = _LPS_FROM_RAS @ (linear / spacing)
    origin = _LPS_FROM_RAS @ np.asarray(ijk_to_ras_matrix, np.float64)[:3, 3]
    return spacing, origin, direction


def geometry_from_lps(spacing, origin_lps, direction_lps) -> np.ndarray:
    """IJK-to-RAS matrix (4, 4) from ITK spacing (3,), origin (3,) and direction (3, 3) in LPS."""
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_FROM_RAS @ np.asarray(direction_lps, np.float64).reshape(3, 3) @ np.diag(spacing)
    matrix[:3, 3] = _LPS_FROM_RAS @ np.asarray(origin_lps, np.float64)
    return matrix


def set_ijk_to_ras(volume_node, matrix: np.ndarray) -> None:
    """Set a node's IJK-to-RAS matrix from a (4, 4) array."""
    vtk_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, float(matrix[r][c]))
    volume_node.SetIJKToRASMatrix(vtk_matrix)


def _node_label(node) -> str:
    return f"volume '{node.GetName()}' ({node.GetID()})"


def image_from_volume_node(volume_node):
    """A SimpleITK image (LPS geometry) with a copy of the node's voxels.

    Raises:
        MaskMedSlicerError: not a scalar volume node, no voxels, or more than one component.
    """
    import SimpleITK as sitk

    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        found = "None" if volume_node is None else volume_node.GetClassName()
        raise MaskMedSlicerError(f"expected a scalar volume node, got {found}")
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise MaskMedSlicerError(f"{_node_label(volume_node)} has no voxels")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise MaskMedSlicerError(
            f"{_node_label(volume_node)} has {image_data.GetNumberOfScalarComponents()} components per voxel; "
            "MaskMed needs single-component (grey-value) volumes: convert colour/vector volumes first"
        )
    array = np.array(slicer.util.arrayFromVolume(volume_node))  # (D, H, W) = (K, J, I), copied
    matrix = ijk_to_ras(volume_node)
    i0, _, j0, _, k0, _ = image_data.GetExtent()
    if (i0, j0, k0) != (0, 0, 0):  # voxel [0, 0, 0] of the array is IJK (i0, j0, k0)
        matrix[:3, 3] = matrix[:3, :3] @ np.array([i0, j0, k0], np.float64) + matrix[:3, 3]
    spacing, origin, direction = geometry_to_lps(matrix)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


@contextlib.contextmanager
def _atomic_path(path: Path):
    """A temp path beside ``path`` with its ending; replaces ``path`` only when the block succeeds."""
    ending = file_ending(path)
    tmp = path.with_name(f".{path.name[: -len(ending)]}.{secrets.token_hex(6)}.tmp{ending}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def export_volume(volume_node, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a scalar volume node to ``path`` (format from the ending) with its full geometry, atomically.

    Args:
        volume_node: ``vtkMRMLScalarVolumeNode`` (or label map volume node), one component per voxel.
        path: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file; the folder must exist.
        compress: lossless compression where the format has it (``.nii.gz`` is always compressed).

    Returns:
        ``path`` as a Path.

    Raises:
        MaskMedSlicerError: bad node, unsupported ending, or the file cannot be written.
    """
    return write_image(image_from_volume_node(volume_node), path, _node_label(volume_node), compress)


def write_image(image, path: str | os.PathLike, what: str = "image", compress: bool = True) -> Path:
    """Write a SimpleITK image to ``path`` atomically; errors name ``what`` and the file."""
    import SimpleITK as sitk

    path = Path(path)
    file_ending(path)
    if not path.parent.is_dir():
        raise MaskMedSlicerError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        with _atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MaskMedSlicerError(f"cannot write {what} to {path}: {reason}") from None
    return path


def read_image(path: str | os.PathLike):
    """Read a 3D single-component image file with SimpleITK; errors name the file."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise MaskMedSlicerError(f"image file {path} does not exist")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise MaskMedSlicerError(f"cannot read image {path}: {lines[-1] if lines else 'unknown error'}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MaskMedSlicerError(
            f"image {path} is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} component(s) "
            "per voxel; expected a 3D single-component image"
        )
    return image


def update_volume_node_from_image(volume_node, image) -> None:
    """Replace a volume node's voxels and geometry by those of a SimpleITK image."""
    import SimpleITK as sitk

    slicer.util.updateVolumeFromArray(volume_node, sitk.GetArrayFromImage(image))
    set_ijk_to_ras(volume_node, geometry_from_lps(image.GetSpacing(), image.GetOrigin(), image.GetDirection()))


def volume_node_from_file(
    path: str | os.PathLike,
    scene,
    name: str,
    node_class: str = "vtkMRMLScalarVolumeNode",
    volume_node=None,
):
    """Load an image file into a new (or the given) volume node of ``scene``, with display nodes.

    Args:
        path: any 3D single-component image SimpleITK reads.
        scene: the ``vtkMRMLScene`` to add the node to.
        name: node name.
        node_class: ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLLabelMapVolumeNode``.
        volume_node: update this node in place instead of adding a new one.

    Returns:
        The volume node, its voxels in array order (D, H, W) and the file's geometry.

    Raises:
        MaskMedSlicerError: unreadable file or bad node class; nothing is left in the scene.
    """
    image = read_image(path)
    created = volume_node is None
    if created:
        if node_class not in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"):
            raise MaskMedSlicerError(
                f"node_class is {node_class!r}; expected vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode"
            )
        volume_node = scene.AddNewNodeByClass(node_class, name)
    try:
        volume_node.SetName(name)
        update_volume_node_from_image(volume_node, image)
        if volume_node.GetDisplayNode() is None:
            volume_node.CreateDefaultDisplayNodes()
    except BaseException:
        if created:
            remove_nodes(scene, [volume_node])
        raise
    return volume_node
