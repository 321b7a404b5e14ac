"""MaskMed's icons, drawn with numpy: the extension icon and the Slicer module icon (128x128 PNG).

The picture is the method in one glance: a few organ-shaped binary masks (a liver, a spleen, two
kidneys and the aorta in 3D Slicer's anatomy colours), each with the query dot that predicted it, and a
row of query dots along the bottom, linked to their masks. Shapes are drawn at 4x and box-filtered
down, so edges are anti-aliased without any drawing library.

Regenerate the shipped files from the repository root with::

    python -c "from MaskMedCore.visual.icons import write_icons; write_icons('.')"
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from MaskMedCore.errors import ConfigError
from MaskMedCore.visual.png import SLICER_ORGAN_COLORS, write_png

#: The two shipped icons, relative to the repository root: (path, variant).
ICON_FILES: tuple[tuple[str, str], ...] = (
    ("Resources/MaskMed.png", "extension"),
    ("MaskMedSlicer/Resources/Icons/MaskMedSlicer.png", "module"),
)
VARIANTS = ("extension", "module")

_SUPERSAMPLE = 4
# Tile colours per variant: (top, bottom) of a vertical gradient.
_TILE = {
    "extension": ((24, 42, 78), (12, 20, 40)),  # night blue: stands out in the Extensions Manager
    "module": ((44, 62, 98), (22, 32, 58)),  # a lighter blue for the module list beside Slicer's own icons
}
_OUTSIDE = np.array((255, 255, 255), np.float64)
_QUERY = np.array((250, 250, 250), np.float64)

# Organs in unit coordinates (x right, y down, both in [0, 1] of the tile): name, centre, semi-axes,
# rotation in degrees. The patient's right (liver) is on the image left, as in radiological view.
# Listed left to right, the order of their query dots, so the links do not cross.
_ORGANS = (
    ("kidney_right", (0.29, 0.64), (0.08, 0.12), 12.0),
    ("liver", (0.34, 0.32), (0.23, 0.15), -15.0),
    ("aorta", (0.51, 0.60), (0.05, 0.05), 0.0),
    ("kidney_left", (0.71, 0.64), (0.08, 0.12), -12.0),
    ("spleen", (0.78, 0.31), (0.095, 0.14), 25.0),
)
# The liver's left lobe, reaching over the midline towards the spleen.
_LIVER_LEFT_LOBE = ((0.54, 0.27), (0.15, 0.065), -12.0)


def draw_icon(size: int = 128, variant: str = "extension") -> np.ndarray:
    """Draw MaskMed's icon.

    Args:
        size: edge length in pixels (at least 16).
        variant: ``extension`` (the Extensions Manager tile) or ``module`` (the module list icon, a
            lighter tile).

    Returns:
        (size, size, 3) uint8 RGB image.

    Raises:
        ConfigError: a bad size or variant.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ConfigError(f"icon size must be an integer >= 16 pixels, got {size!r}")
    if variant not in VARIANTS:
        raise ConfigError(f"icon variant is {variant!r}; expected one of {VARIANTS}")
    n = size * _SUPERSAMPLE
    # Pixel centres in unit coordinates: (n, n) each, y down.
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    x, y = (x + 0.5) / n, (y + 0.5) / n

    top, bottom = (np.array(c, np.float64) for c in _TILE[variant])
    img = top + (bottom - top) * y[..., None]  # (n, n, 3) gradient tile
    tile = _rounded_square(x, y, margin=0.03, radius=0.16)
    img = np.where(tile[..., None], img, _OUTSIDE)

    links = np.zeros((n, n), bool)
    query_y = 0.875
    query_x = np.linspace(0.2, 0.8, len(_ORGANS))
    for (name, centre, semi, angle), qx in zip(_ORGANS, query_x):
        color = np.array(SLICER_ORGAN_COLORS[name], np.float64)
        mask = _ellipse(x, y, centre, semi, angle)
        if name == "liver":
            mask |= _ellipse(x, y, *_LIVER_LEFT_LOBE)
        if name.startswith("kidney"):  # a bean: bite out the hilum facing the spine
            side = 1.0 if centre[0] < 0.5 else -1.0
            mask &= ~_ellipse(x, y, (centre[0] + side * semi[0] * 1.1, centre[1]), (semi[0] * 0.6, semi[1] * 0.35), 0)
        edge = mask & ~_erode(mask, max(1, n // 96))
        img[mask] = 0.25 * img[mask] + 0.75 * color  # the mask, slightly see-through
        img[edge] = np.minimum(color * 1.25, 255.0)  # and its outline
        links |= _segment(x, y, (qx, query_y), centre, width=0.012) & ~mask
    img[links & tile] = 0.55 * img[links & tile] + 0.45 * _QUERY
    for (name, centre, _, _), qx in zip(_ORGANS, query_x):
        color = np.array(SLICER_ORGAN_COLORS[name], np.float64)
        for cx, cy, r in ((centre[0], centre[1], 0.032), (qx, query_y, 0.045)):
            ring = _disc(x, y, (cx, cy), r)
            img[ring] = _QUERY
            img[_disc(x, y, (cx, cy), r * 0.55)] = color
    # (n, n, 3) -> (size, s, size, s, 3) -> mean over each s x s block
    img = img.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_icon(path: str | os.PathLike, variant: str = "extension", size: int = 128) -> Path:
    """Draw the icon and write it as a PNG at ``path`` (atomically); return the path."""
    return write_png(draw_icon(size, variant), path)


def write_icons(repo_root: str | os.PathLike) -> list[Path]:
    """Write every file of :data:`ICON_FILES` under ``repo_root``; return their paths."""
    return [write_icon(Path(repo_root) / rel, variant) for rel, variant in ICON_FILES]


def _rounded_square(x: np.ndarray, y: np.ndarray, margin: float, radius: float) -> np.ndarray:
    lo, hi = margin + radius, 1.0 - margin - radius
    dx = np.maximum(np.maximum(lo - x, x - hi), 0.0)
    dy = np.maximum(np.maximum(lo - y, y - hi), 0.0)
    inside = (x >= margin) & (x <= 1 - margin) & (y >= margin) & (y <= 1 - margin)
    return inside & (dx**2 + dy**2 <= radius**2)


def _ellipse(x: np.ndarray, y: np.ndarray, centre, semi, angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    u, v = x - centre[0], y - centre[1]
    ur, vr = u * np.cos(a) + v * np.sin(a), -u * np.sin(a) + v * np.cos(a)
    return (ur / semi[0]) ** 2 + (vr / semi[1]) ** 2 <= 1.0


def _disc(x: np.ndarray, y: np.ndarray, centre, radius: float) -> np.ndarray:
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2


def _segment(x: np.ndarray, y: np.ndarray, p0, p1, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the line segment p0-p1."""
    d = np.array(p1, np.float64) - np.array(p0, np.float64)
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 <= (width / 2) ** 2


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        p = np.pad(out, 1)
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out
