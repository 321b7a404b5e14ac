"""Segment inside a markups ROI: which voxels of a volume the ROI covers, the cropped inputs, the mask.

The crop is Slicer's own voxel-based crop (``vtkSlicerCropVolumeLogic.GetVoxelBasedCropOutputExtent``,
what the Crop Volume module does without interpolation): the voxels of the volume's grid whose whole
cell lies inside the ROI's bounding box in the volume's IJK space, with the volume's and the ROI's parent
transforms (linear) taken into account. The crop stays on the volume's grid (same spacing and directions,
oblique ones included; only the origin moves), so its result needs no resampling: it is imported into
the full volume's geometry as it is. When the ROI is rotated against the volume's axes, the crop is the
ROI's bounding box in IJK and :attr:`RoiCrop.inside` marks the voxels whose centre is inside the ROI;
the result is cleared outside them, so nothing is segmented outside the ROI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.volume_io import ijk_to_ras

_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RoiCrop:
    """The part of a volume's voxel grid that an ROI covers.

    Attributes:
        start: (i, j, k) index of the crop's first voxel in the volume's image data.
        size: (ni, nj, nk) number of voxels along I, J, K.
        inside: (nk, nj, ni) bool, array order (D, H, W): voxel centres inside the ROI.
        clipped: the ROI reaches beyond the volume and was clipped to it.
        message: one line for the log saying what was cropped (and clipped).
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]
    inside: np.ndarray
    clipped: bool
    message: str

    @property
    def array_slices(self) -> tuple[slice, slice, slice]:
        """Slices of a (D, H, W) volume array that hold the crop."""
        (i, j, k), (ni, nj, nk) = self.start, self.size
        return slice(k, k + nk), slice(j, j + nj), slice(i, i + ni)


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _to_world(node) -> np.ndarray:
    """(4, 4) node-to-world matrix of a node's parent transforms (identity without one)."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise MaskMedSlicerError(
            f"'{node.GetName()}' is under a non-linear transform; harden the transform (Data module) or remove it"
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _matrix(matrix)


def _check_roi(roi_node, volume_node) -> None:
    if roi_node is None or not roi_node.IsA("vtkMRMLMarkupsROINode"):
        found = "None" if roi_node is None else roi_node.GetClassName()
        raise MaskMedSlicerError(f"roi must be a markups ROI node (vtkMRMLMarkupsROINode), got {found}")
    if roi_node.GetScene() is not volume_node.GetScene():
        raise MaskMedSlicerError(f"ROI '{roi_node.GetName()}' is not in the scene of '{volume_node.GetName()}'")
    if roi_node.GetInsideOut():
        raise MaskMedSlicerError(f"ROI '{roi_node.GetName()}' is inside-out; MaskMed segments inside an ROI only")
    if any(s <= 0 for s in roi_node.GetSize()):
        raise MaskMedSlicerError(f"ROI '{roi_node.GetName()}' has no size yet (size {list(roi_node.GetSize())})")


def roi_crop(volume_node, roi_node) -> RoiCrop:
    """The voxels of ``volume_node`` that ``roi_node`` covers.

    Raises:
        MaskMedSlicerError: not a markups ROI, an inside-out or empty ROI, a non-linear transform, or an
            ROI that covers no whole voxel of the volume (names both nodes and what to do).
    """
    _check_roi(roi_node, volume_node)
    _to_world(roi_node), _to_world(volume_node)  # refuse non-linear transforms with a clear message
    image_data = volume_node.GetImageData()
    if image_data is None:
        raise MaskMedSlicerError(f"volume '{volume_node.GetName()}' has no voxels")
    wanted = [0] * 6
    if not slicer.vtkSlicerCropVolumeLogic.GetVoxelBasedCropOutputExtent(roi_node, volume_node, wanted, False):
        raise MaskMedSlicerError(f"cannot crop '{volume_node.GetName()}' with ROI '{roi_node.GetName()}'")
    full = image_data.GetExtent()
    got = [max(wanted[a], full[a]) if a % 2 == 0 else min(wanted[a], full[a]) for a in range(6)]
    names = f"ROI '{roi_node.GetName()}' and volume '{volume_node.GetName()}'"
    if any(wanted[2 * a] > wanted[2 * a + 1] for a in range(3)):
        raise MaskMedSlicerError(f"{names}: the ROI is thinner than one voxel of the volume; make it larger")
    if any(got[2 * a] > got[2 * a + 1] for a in range(3)):
        raise MaskMedSlicerError(f"{names} do not overlap; move the ROI onto the volume (or pick another volume)")
    start = tuple(int(got[2 * a] - full[2 * a]) for a in range(3))
    size = tuple(int(got[2 * a + 1] - got[2 * a] + 1) for a in range(3))
    clipped = got != wanted
    message = f"segmenting inside ROI '{roi_node.GetName()}': {size[0]} x {size[1]} x {size[2]} voxels of "
    message += f"'{volume_node.GetName()}' from voxel {list(start)}"
    if clipped:
        outside = [wanted[2 * a + 1] - wanted[2 * a] + 1 for a in range(3)]
        message += f" (the ROI covers {outside[0]} x {outside[1]} x {outside[2]} voxels and was clipped to the volume)"
    return RoiCrop(start, size, inside_roi(volume_node, roi_node, start, size), clipped, message)


def inside_roi(volume_node, roi_node, start, size) -> np.ndarray:
    """(nk, nj, ni) bool: which voxel centres of the crop ``start``, ``size`` lie inside the ROI box."""
    ijk_to_world = _to_world(volume_node) @ ijk_to_ras(volume_node)
    object_to_world = _matrix(roi_node.GetObjectToWorldMatrix())
    ijk_to_object = np.linalg.inv(object_to_world) @ ijk_to_world
    extent = volume_node.GetImageData().GetExtent()
    i, j, k = (np.arange(n) + s + extent[2 * a] for a, (s, n) in enumerate(zip(start, size)))
    kk, jj, ii = np.meshgrid(k, j, i, indexing="ij")  # (nk, nj, ni): array order
    points = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1).reshape(-1, 4).astype(np.float64)
    object_points = points @ ijk_to_object.T  # (N, 4)
    half = np.asarray(roi_node.GetSize(), np.float64) / 2.0
    inside = np.all(np.abs(object_points[:, :3]) <= half * (1 + _TOLERANCE) + _TOLERANCE, axis=1)
    return inside.reshape(size[2], size[1], size[0])


def crop_image(image, crop: RoiCrop):
    """The crop of a SimpleITK image of the whole volume (same grid: the origin moves, nothing is resampled)."""
    import SimpleITK as sitk

    return sitk.RegionOfInterest(image, list(crop.size), list(crop.start))


def mask_outside(image, crop: RoiCrop):
    """A label image of the crop with every voxel whose centre is outside the ROI set to 0."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    if array.shape != crop.inside.shape:
        raise MaskMedSlicerError(f"the prediction has {array.shape[::-1]} voxels, the ROI crop {crop.size}")
    array[~crop.inside] = 0
    masked = sitk.GetImageFromArray(array)
    masked.CopyInformation(image)
    return masked
