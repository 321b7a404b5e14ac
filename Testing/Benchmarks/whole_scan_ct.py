"""A real whole-scan CT at a plan's spacing for the whole-scan inference rows (issue 14).

Source: TotalSegmentator's example abdomen-pelvis CT in ``shared/data/totalseg_examples``
(``ct3mm_full``: 122x101x112 voxels at 3 mm, liver dome to proximal femur, Apache-2.0 repository; used
here for timing only, never shipped), resampled (linear; labels nearest) to the plan's spacing and
padded in-plane, centred, with -1024 HU (the value scanners write outside the reconstruction circle) to
the requested size: at 0.8x0.8x1.5 mm that is 512x512x224 voxels, a 410 mm field of view around a
366x303 mm body section, as a clinical abdominal CT. Its labels (TotalSegmentator pseudo-labels) give
the foreground intensity statistics a plan's CT normalisation needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SOURCE = "totalseg_examples/ct3mm_full"
AIR_HU = -1024


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or $MASKMED_SHARED_DATA (as the tests' conftest)."""
    env = os.environ.get("MASKMED_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def whole_scan_ct(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[Any, Any]:
    """The real CT resampled to ``spacing`` and padded/cropped (centred) to ``shape``.

    Args:
        shape: (D, H, W) voxels.
        spacing: (D, H, W) mm.

    Returns:
        ``(image, labels)``: (D, H, W) int16 HU and uint8 label arrays.

    Raises:
        FileNotFoundError: the shared data folder lacks the source CT.
    """
    import numpy as np
    import SimpleITK as sitk

    root = shared_data_dir()
    paths = [root / f"{SOURCE}_{kind}.nii.gz" for kind in ("image", "label")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: set MASKMED_SHARED_DATA to the shared data folder")
    image, labels = (sitk.ReadImage(str(p)) for p in paths)
    out_spacing = tuple(float(s) for s in reversed(spacing))  # SimpleITK order (x, y, z)
    size = [int(round(n * s / o)) for n, s, o in zip(image.GetSize(), image.GetSpacing(), out_spacing)]

    def resample(volume: sitk.Image, interpolator: int, fill: float) -> np.ndarray:
        return sitk.GetArrayFromImage(
            sitk.Resample(
                volume,
                size,
                sitk.Transform(),
                interpolator,
                volume.GetOrigin(),
                out_spacing,
                volume.GetDirection(),
                fill,
                volume.GetPixelID(),
            )
        )

    arrays = [resample(image, sitk.sitkLinear, AIR_HU), resample(labels, sitk.sitkNearestNeighbor, 0)]
    out = []
    for array, fill, dtype in zip(arrays, (AIR_HU, 0), (np.int16, np.uint8), strict=True):
        # Centre-pad, then centre-crop, every axis to the requested size.
        pads = [(max(0, t - n) // 2, max(0, t - n) - max(0, t - n) // 2) for t, n in zip(shape, array.shape)]
        array = np.pad(array, pads, constant_values=fill)
        starts = [(n - t) // 2 for t, n in zip(shape, array.shape)]
        crop = tuple(slice(s, s + t) for s, t in zip(starts, shape))
        out.append(np.ascontiguousarray(array[crop]).astype(dtype))
    return out[0], out[1]


__all__ = ["whole_scan_ct"]
