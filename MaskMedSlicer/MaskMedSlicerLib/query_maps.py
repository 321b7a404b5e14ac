"""Per-query probability maps kept in memory, compactly, after the prediction folder is deleted.

``maskmed predict --save-queries`` writes one float32 map per query at the input's full resolution
(about 300 MB each for a 512 x 512 x 300 CT). The module keeps each as **uint8** (probability x 255,
rounded) **cropped to the voxels where it is non-zero**, with the voxel offset that puts it back on the
reference volume's grid, and deletes the folder as soon as the result is in the scene. Most queries of
a case are "no object" and hold (almost) nothing, so a run keeps a few MB instead of GB, and no
temporary file outlives the run.

Rounding to 1/255 moves a probability by at most 1/510; a threshold ``t`` is applied to the stored value
as ``round(255 p) >= max(1, round(255 t))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.volume_io import geometry_from_lps, geometry_to_lps

_GRID_TOLERANCE = 1e-3  # voxels


@dataclass(frozen=True)
class QueryMap:
    """One query's mask probabilities on (part of) a reference voxel grid.

    Attributes:
        probabilities: (d, h, w) uint8, 0..255 for probability 0..1; the bounding box of its non-zero voxels
            (a single 0 voxel for a query that is nowhere).
        offset: (k, j, i) index on the reference grid of ``probabilities[0, 0, 0]`` (array order D, H, W).
        ijk_to_ras: (4, 4) IJK-to-RAS matrix of the reference grid (the volume's local coordinates).
        grid_shape: (D, H, W) of the reference grid.
    """

    probabilities: np.ndarray
    offset: tuple[int, int, int]
    ijk_to_ras: np.ndarray
    grid_shape: tuple[int, int, int]

    @property
    def nbytes(self) -> int:
        return int(self.probabilities.nbytes)

    def crop_ijk_to_ras(self) -> np.ndarray:
        """(4, 4) IJK-to-RAS of the stored crop (the reference's, moved to the crop's first voxel)."""
        k, j, i = self.offset
        matrix = np.array(self.ijk_to_ras, np.float64)
        matrix[:3, 3] = matrix[:3, :3] @ np.array([i, j, k], np.float64) + matrix[:3, 3]
        return matrix

    def image(self, threshold: float | None = None):
        """The crop as a SimpleITK image: float32 probabilities, or uint8 0/1 for ``p >= threshold``."""
        import SimpleITK as sitk

        if threshold is None:
            array = self.probabilities.astype(np.float32) / 255.0
        else:
            if not 0.0 < threshold <= 1.0:
                raise MaskMedSlicerError(f"threshold must be in (0, 1], got {threshold}")
            array = (self.probabilities >= max(1, round(255 * threshold))).astype(np.uint8)
        image = sitk.GetImageFromArray(array)
        spacing, origin, direction = geometry_to_lps(self.crop_ijk_to_ras())
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(direction.ravel().tolist())
        return image

    def full_array(self) -> np.ndarray:
        """(D, H, W) float32 probabilities on the whole reference grid (zero outside the crop)."""
        out = np.zeros(self.grid_shape, np.float32)
        k, j, i = self.offset
        d, h, w = self.probabilities.shape
        out[k : k + d, j : j + h, i : i + w] = self.probabilities.astype(np.float32) / 255.0
        return out


def _offset_on_grid(image, ijk_to_ras: np.ndarray) -> tuple[int, int, int]:
    """(k, j, i) of the image's first voxel on the reference grid; raises when the grids differ."""
    matrix = geometry_from_lps(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if not np.allclose(matrix[:3, :3], ijk_to_ras[:3, :3], rtol=1e-4, atol=1e-4):
        raise MaskMedSlicerError("a query map does not share the reference volume's spacing and directions")
    ijk = np.linalg.solve(ijk_to_ras[:3, :3], matrix[:3, 3] - ijk_to_ras[:3, 3])
    if np.max(np.abs(ijk - np.rint(ijk))) > _GRID_TOLERANCE:
        raise MaskMedSlicerError(f"a query map starts between voxels of the reference grid (at IJK {ijk.tolist()})")
    i, j, k = (int(v) for v in np.rint(ijk))
    return k, j, i


def compact_query_map(image, ijk_to_ras: np.ndarray, grid_shape, inside: np.ndarray | None = None) -> QueryMap:
    """Quantise a float probability image to uint8 and crop it to its non-zero voxels.

    Args:
        image: SimpleITK float image on (a sub-box of) the reference grid, values in 0..1.
        ijk_to_ras: (4, 4) reference grid (local IJK-to-RAS of the segmented volume).
        grid_shape: (D, H, W) of the reference grid.
        inside: optional (d, h, w) bool of the image's voxels to keep (an ROI's inside); others become 0.
    """
    import SimpleITK as sitk

    ijk_to_ras = np.asarray(ijk_to_ras, np.float64)
    start = _offset_on_grid(image, ijk_to_ras)
    quantised = np.rint(np.clip(sitk.GetArrayViewFromImage(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    if inside is not None:
        quantised[~inside] = 0
    if any(s < 0 or s + n > g for s, n, g in zip(start, quantised.shape, grid_shape)):
        raise MaskMedSlicerError(f"a query map of {quantised.shape} at {start} reaches outside the grid {grid_shape}")
    nonzero = np.nonzero(quantised)
    if len(nonzero[0]) == 0:
        return QueryMap(np.zeros((1, 1, 1), np.uint8), start, ijk_to_ras, tuple(grid_shape))
    lo = [int(a.min()) for a in nonzero]
    hi = [int(a.max()) + 1 for a in nonzero]
    crop = np.ascontiguousarray(quantised[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    offset = tuple(s + low for s, low in zip(start, lo))
    return QueryMap(crop, offset, ijk_to_ras, tuple(grid_shape))
