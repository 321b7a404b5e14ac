"""Scalar volume node <-> image file, keeping the full voxel-to-world geometry; a colour (vector) volume's
components as channel images.

Slicer stores a volume's geometry as one IJK-to-RAS matrix; ITK/SimpleITK files store spacing,
origin and a direction matrix in LPS. The two are converted exactly, oblique directions included:

    IJKToRAS[:3, :3] = diag(-1, -1, 1) @ direction_lps @ diag(spacing)
    IJKToRAS[:3, 3]  = diag(-1, -1, 1) @ origin_lps

Arrays are in MRML/SimpleITK array order ``(D, H, W)`` = (K, J, I). A volume's parent transform is
not applied (as with Slicer's own writers): the file holds the volume's local geometry, and readers
here put new nodes under the reference volume's parent transform instead.

2D images: Slicer loads a PNG/JPEG/BMP/TIFF as a volume with one slice (K = 1), a grey one as a scalar
volume and a colour one as a ``vtkMRMLVectorVolumeNode`` with 3 (RGB) or 4 (RGBA) components.
:func:`channel_images_from_volume_node` gives its channels as MaskMedCore reads the same file: R, G, B,
alpha dropped. Nothing else is special: a one-slice volume goes through the same export and import.
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


def image_from_volume_node(volume_node, component: int | None = None):
    """A SimpleITK image (LPS geometry) with a copy of the node's voxels.

    Args:
        volume_node: a scalar volume node (a vector volume node with ``component``).
        component: the component of a vector (colour) volume to take; None for a scalar volume.

    Raises:
        MaskMedSlicerError: not a scalar volume node, no voxels, several components and no ``component``,
            or ``component`` out of range.
    """
    import SimpleITK as sitk

    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        found = "None" if volume_node is None else volume_node.GetClassName()
        raise MaskMedSlicerError(f"expected a scalar volume node, got {found}")
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise MaskMedSlicerError(f"{_node_label(volume_node)} has no voxels")
    comps = image_data.GetNumberOfScalarComponents()
    if component is None and comps != 1:
        raise MaskMedSlicerError(
            f"{_node_label(volume_node)} has {comps} components per voxel; "
            "MaskMed needs single-component (grey-value) volumes: convert colour/vector volumes first"
        )
    if component is not None and not 0 <= component < comps:
        raise MaskMedSlicerError(f"{_node_label(volume_node)} has {comps} component(s); component {component} asked")
    array = slicer.util.arrayFromVolume(volume_node)  # (D, H, W) = (K, J, I), or (D, H, W, C)
    array = np.array(array if comps == 1 else array[..., component])  # copied
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


def colour_channels(volume_node) -> tuple[int, str]:
    """``(channels, description)`` of an input volume: 1 for a scalar volume, 3 for RGB and RGBA (alpha
    dropped) vector volumes.

    Raises:
        MaskMedSlicerError: a vector volume with another number of components, or no voxels.
    """
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise MaskMedSlicerError(f"{_node_label(volume_node)} has no voxels")
    comps = image_data.GetNumberOfScalarComponents()
    if comps == 1:
        return 1, "grey-value"
    if comps == 3:
        return 3, "RGB"
    if comps == 4:
        return 3, "RGBA, alpha dropped"
    raise MaskMedSlicerError(
        f"{_node_label(volume_node)} has {comps} components per voxel; MaskMed reads grey-value volumes and "
        "colour volumes with 3 (RGB) or 4 (RGBA) components: split it into scalar volumes, one per channel"
    )


def channel_images_from_volume_node(volume_node) -> list:
    """The node's channels as SimpleITK images (LPS geometry): the volume itself, or R, G, B of a colour volume.

    Raises:
        MaskMedSlicerError: as :func:`image_from_volume_node` and :func:`colour_channels`.
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        return [image_from_volume_node(volume_node)]  # raises with what was found
    channels, _ = colour_channels(volume_node)
    if volume_node.GetImageData().GetNumberOfScalarComponents() == 1:
        return [image_from_volume_node(volume_node)]
    return [image_from_volume_node(volume_node, c) for c in range(channels)]


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
