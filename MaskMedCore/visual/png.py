"""Small PNG figures without matplotlib: heatmaps (viridis, optional text labels) and CT slice overlays.

PNGs are encoded here (8-bit RGB, zlib, one filter byte per row as in the PNG specification) and
written atomically with :func:`MaskMedCore.io_utils.atomic_write_bytes`, so no plotting library is
needed and a figure never appears half-written. Text uses a built-in 3x5 pixel font: upper-case
letters (lower case is drawn upper case), digits and ``.,:;-_+=/()%#<>`` ; other characters show as ``?``.
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

_GRID_COLOR = np.array((255, 255, 255), np.uint8)
_NAN_COLOR = np.array((128, 128, 128), np.uint8)
_TEXT_COLOR = np.array((0, 0, 0), np.uint8)

# 3x5 glyphs, rows top to bottom, '1' = ink.
_FONT = {
    "0": "111 101 101 101 111",
    "1": "010 110 010 010 111",
    "2": "111 001 111 100 111",
    "3": "111 001 111 001 111",
    "4": "101 101 111 001 001",
    "5": "111 100 111 001 111",
    "6": "111 100 111 101 111",
    "7": "111 001 001 010 010",
    "8": "111 101 111 101 111",
    "9": "111 101 111 001 111",
    "A": "010 101 111 101 101",
    "B": "110 101 110 101 110",
    "C": "011 100 100 100 011",
    "D": "110 101 101 101 110",
    "E": "111 100 110 100 111",
    "F": "111 100 110 100 100",
    "G": "011 100 101 101 011",
    "H": "101 101 111 101 101",
    "I": "111 010 010 010 111",
    "J": "001 001 001 101 010",
    "K": "101 101 110 101 101",
    "L": "100 100 100 100 111",
    "M": "101 111 111 101 101",
    "N": "110 101 101 101 101",
    "O": "010 101 101 101 010",
    "P": "110 101 110 100 100",
    "Q": "010 101 101 110 011",
    "R": "110 101 110 101 101",
    "S": "011 100 010 001 110",
    "T": "111 010 010 010 010",
    "U": "101 101 101 101 111",
    "V": "101 101 101 101 010",
    "W": "101 101 111 111 101",
    "X": "101 101 010 101 101",
    "Y": "101 101 010 010 010",
    "Z": "111 001 010 100 111",
    " ": "000 000 000 000 000",
    ".": "000 000 000 000 010",
    ",": "000 000 000 010 100",
    ":": "000 010 000 010 000",
    ";": "000 010 000 010 100",
    "-": "000 000 111 000 000",
    "_": "000 000 000 000 111",
    "+": "000 010 111 010 000",
    "=": "000 111 000 111 000",
    "/": "001 001 010 100 100",
    "(": "010 100 100 100 010",
    ")": "010 001 001 001 010",
    "%": "101 001 010 100 101",
    "#": "101 111 101 111 101",
    "<": "001 010 100 010 001",
    ">": "100 010 001 010 100",
    "?": "111 001 010 000 010",
}
_GLYPHS = {c: np.array([[ch == "1" for ch in row] for row in rows.split()], bool) for c, rows in _FONT.items()}


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


def render_text(text: str, scale: int = 1) -> np.ndarray:
    """Bitmap of ``text`` in the built-in 3x5 font: (5*scale, (4*len-1)*scale) bool, True = ink."""
    glyphs = [_GLYPHS.get(c, _GLYPHS["?"]) for c in str(text).upper()] or [_GLYPHS[" "]]
    gap = np.zeros((5, 1), bool)
    bitmap = np.concatenate([part for g in glyphs for part in (g, gap)][:-1], axis=1)
    return np.kron(bitmap, np.ones((scale, scale), bool)).astype(bool)


def heatmap_png(
    matrix: np.ndarray,
    path: str | os.PathLike,
    cell: int = 24,
    vmin: float | None = None,
    vmax: float | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Path:
    """Write a viridis heatmap of ``matrix`` with a one-pixel white grid; NaN cells are grey.

    Args:
        matrix: (R, C) float; cell ``[r, c]`` is drawn at row r (top down), column c.
        path: the PNG to write.
        cell: cell size in pixels.
        vmin, vmax: values mapped to the ends of viridis (default: the finite min and max).
        row_labels: R strings drawn left of the rows; col_labels: C strings drawn above the columns,
            rotated to read bottom-up.

    Returns:
        ``path``. The image is ``top + R*cell + 1`` by ``left + C*cell + 1`` pixels; ``left``/``top`` are
        0 without labels.
    """
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise DataError(f"heatmap matrix must be a non-empty 2-D (R, C) array, got shape {m.shape}")
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 3:
        raise ConfigError(f"cell must be an integer >= 3 pixels, got {cell!r}")
    R, C = m.shape
    for what, labels, n in (("row_labels", row_labels, R), ("col_labels", col_labels, C)):
        if labels is not None and len(labels) != n:
            raise ConfigError(f"{what} has {len(labels)} entries, expected {n} for a {R}x{C} matrix")
    finite = m[np.isfinite(m)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    colors = colormap_viridis((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
    colors[~np.isfinite(m)] = _NAN_COLOR
    # (R, C, 3) -> (R*cell, C*cell, 3) with the grid on each cell's top/left edge (+1 for the last edge).
    body = np.repeat(np.repeat(colors, cell, axis=0), cell, axis=1)
    body[::cell, :] = _GRID_COLOR
    body[:, ::cell] = _GRID_COLOR
    body = np.pad(body, ((0, 1), (0, 1), (0, 0)))
    body[-1, :] = body[:, -1] = _GRID_COLOR

    scale = max(1, cell // 12)
    rows_txt = [render_text(t, scale) for t in row_labels] if row_labels is not None else []
    cols_txt = [np.rot90(render_text(t, scale)) for t in col_labels] if col_labels is not None else []
    pad = 2 * scale
    left = max((t.shape[1] for t in rows_txt), default=-pad) + pad
    top = max((t.shape[0] for t in cols_txt), default=-pad) + pad
    canvas = np.full((top + body.shape[0], left + body.shape[1], 3), 255, np.uint8)
    canvas[top:, left:] = body
    for r, t in enumerate(rows_txt):
        y0 = top + r * cell + max(0, (cell - t.shape[0]) // 2)
        x0 = left - pad - t.shape[1]
        canvas[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]][t[: canvas.shape[0] - y0]] = _TEXT_COLOR
    for c, t in enumerate(cols_txt):
        x0 = left + c * cell + max(0, (cell - t.shape[1]) // 2)
        y0 = top - pad - t.shape[0]
        canvas[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]][t[:, : canvas.shape[1] - x0]] = _TEXT_COLOR
    return write_png(canvas, path)


def overlay_png(
    image_slice: np.ndarray,
    labels_slice: np.ndarray,
    path: str | os.PathLike,
    window: tuple[float, float] = (-150.0, 250.0),
    colors: np.ndarray | None = None,
    alpha: float = 0.5,
    outline: bool = True,
    scale: int = 1,
) -> Path:
    """Write a grey CT slice with its labels blended in colour; background (0) stays transparent.

    Args:
        image_slice: (H, W) float, e.g. HU; shown with row 0 at the top.
        labels_slice: (H, W) int label values.
        path: the PNG to write.
        window: (low, high) intensities mapped to black and white (default an abdominal soft-tissue window).
        colors: (K, 3) uint8 colour per label value (default :func:`label_colors`); must cover every label.
        alpha: label opacity in [0, 1] inside each label.
        outline: draw each label's boundary pixels at full colour.
        scale: integer nearest-neighbour magnification of the figure.

    Returns:
        ``path``; the PNG is ``(H*scale, W*scale)`` RGB.
    """
    img = np.asarray(image_slice, np.float64)
    lab = np.asarray(labels_slice)
    if img.ndim != 2 or img.shape != lab.shape:
        raise DataError(f"image_slice and labels_slice must be 2-D (H, W) of one shape, got {img.shape}, {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"labels_slice must hold integers, got dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise DataError(f"labels_slice has negative label {int(lab.min())}")
    lo, hi = (float(x) for x in window)
    if not hi > lo:
        raise ConfigError(f"window must be (low, high) with high > low, got {window!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    max_label = int(lab.max()) if lab.size else 0
    table = label_colors(max(max_label + 1, 2)) if colors is None else np.asarray(colors)
    if table.ndim != 2 or table.shape[1] != 3:
        raise ConfigError(f"colors must be a (K, 3) table of RGB values, got shape {table.shape}")
    if max_label >= len(table):
        raise DataError(f"labels_slice has label {max_label} but colors only covers 0..{len(table) - 1}")
    grey = np.clip((img - lo) / (hi - lo), 0.0, 1.0)[..., None] * 255.0  # (H, W, 1)
    color = table.astype(np.float64)[lab]  # (H, W, 3)
    fg = (lab > 0)[..., None]
    rgb = np.where(fg, (1 - alpha) * grey + alpha * color, grey)
    if outline:
        # A label pixel whose 4-neighbour has another value is on a boundary.
        p = np.pad(lab, 1, mode="edge")
        edge = (p[:-2, 1:-1] != lab) | (p[2:, 1:-1] != lab) | (p[1:-1, :-2] != lab) | (p[1:-1, 2:] != lab)
        rgb = np.where((edge & (lab > 0))[..., None], color, rgb)
    rgb = np.rint(rgb).astype(np.uint8)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return write_png(rgb, path)
