"""PNG writing and colour tables without a plotting library: the icons and the VTK render use them, and
the Slicer module uses the same viridis table and organ colours. Figures for people (heatmaps,
overlays) are drawn with matplotlib in ``figures.py``.

PNGs are encoded here (8-bit RGB, zlib, one filter byte per row as in the PNG specification) and
written atomically with :func:`MaskMedCore.io_utils.atomic_write_bytes`, so an image never appears
half-written.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_bytes

# viridis at 9 evenly spaced points (matplotlib's table, as R's viridisLite::viridis(9) lists it).
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 144, 140),
        (39, 173, 129),
        (93, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    np.float64,
)

# Colours of 3D Slicer's GenericAnatomyColors table (as TotalSegmentator's Slicer extension shows them).
SLICER_ORGAN_COLORS: dict[str, tuple[int, int, int]] = {
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney": (185, 102, 83),
    "kidney_left": (185, 102, 83),
    # Slicer shows both kidneys in the kidney colour; the right one is yellow here so that a figure shows
    # left/right swaps and the right kidney stands out against the liver it touches.
    "kidney_right": (230, 210, 70),
    "aorta": (224, 97, 76),
    "inferior_vena_cava": (0, 151, 206),
    "gallbladder": (139, 150, 98),
    "stomach": (216, 132, 105),
    "pancreas": (249, 180, 111),
    "esophagus": (211, 171, 143),
    "duodenum": (255, 253, 229),
    "adrenal_gland": (244, 214, 49),
    "urinary_bladder": (222, 154, 132),
    "portal_vein_and_splenic_vein": (0, 112, 165),
}

#: Label order assumed when ``label_colors`` gets no names: that of ``MaskMedCore.data.phantom.PHANTOM_LABELS``.
DEFAULT_LABEL_NAMES = ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit image.

    Args:
        rgb: (H, W, 3) uint8 colour or (H, W) uint8 grey.
    """
    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3) or 0 in rgb.shape:
        raise DataError(f"a PNG needs a non-empty (H, W, 3) or (H, W) uint8 array, got {rgb.dtype} {rgb.shape}")
    H, W = rgb.shape[:2]
    color_type = 2 if rgb.ndim == 3 else 0
    rows = np.concatenate([np.zeros((H, 1), np.uint8), rgb.reshape(H, -1)], axis=1)  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", W, H, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W, 3) or (H, W) uint8 ``rgb`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, encode_png(rgb))


def viridis_rgb(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to viridis: (...) float -> (..., 3) float64 in 0..255."""
    t = np.nan_to_num(np.clip(np.asarray(values, np.float64), 0.0, 1.0), nan=0.0) * (len(_VIRIDIS) - 1)
    lo = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    frac = (t - lo)[..., None]
    return _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac


def colormap_viridis(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to viridis colours: (...) float -> (..., 3) uint8."""
    return np.rint(viridis_rgb(values)).astype(np.uint8)


def label_colors(num_labels: int, names: Sequence[str] | None = None) -> np.ndarray:
    """Colour table for label values ``0 .. num_labels - 1``: (K, 3) uint8, background black.

    Args:
        num_labels: K, labels including background.
        names: label names in value order (default :data:`DEFAULT_LABEL_NAMES`, the phantom's); names
            found in :data:`SLICER_ORGAN_COLORS` get Slicer's colour, the rest a fixed distinct palette.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ConfigError(f"num_labels must be a positive integer, got {num_labels!r}")
    if names is not None and len(names) != num_labels:
        raise ConfigError(f"names has {len(names)} entries but num_labels is {num_labels}")
    names = list(names) if names is not None else list(DEFAULT_LABEL_NAMES[:num_labels])
    out = np.zeros((num_labels, 3), np.uint8)
    for k in range(1, num_labels):
        name = names[k].lower().replace(" ", "_") if k < len(names) else ""
        if name in SLICER_ORGAN_COLORS:
            out[k] = SLICER_ORGAN_COLORS[name]
        else:  # golden-angle hues, bright and saturated, fixed per label value
            hue = (k * 0.618033988749895) % 1.0
            out[k] = _hsv_to_rgb(hue, 0.65, 0.95)
    return out


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return round(r * 255), round(g * 255), round(b * 255)
