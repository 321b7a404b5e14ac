"""Figures for people (the CLI demo, reports): matplotlib heatmaps and slice overlays with real fonts,
colour bars, axis labels and a legend, at a readable size.

matplotlib is optional (``pip install "MaskMedCore[plot]"``; the ``test`` extra includes it): the core,
the training and inference children and the Slicer module never need it. Check :func:`available`
before drawing; without matplotlib the functions here raise :class:`~MaskMedCore.errors.ConfigError`
with the install line. :mod:`MaskMedCore.visual.png` stays the dependency-free writer for icons, VTK
renders and the colour tables Slicer uses.

Figures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas (no ``pyplot``, no global
backend or state) and written atomically, so a figure never appears half-written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_bytes
from MaskMedCore.visual.png import label_colors

INSTALL_HINT = 'pip install "MaskMedCore[plot]" (or: pip install matplotlib)'
DPI = 150


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _new_figure(width_in: float, height_in: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(f"figures need matplotlib, which is not installed: {INSTALL_HINT}") from None
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def heatmap_figure(
    matrix: np.ndarray,
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    colorbar_label: str | None = None,
    annotate: bool = True,
) -> Path:
    """Write a viridis heatmap with labelled axes, a colour bar and (for up to 30 x 30) the values.

    Args:
        matrix: (R, C) float; cell ``[r, c]`` is row r (top down), column c. NaN cells are left blank.
        path: the PNG to write.
        row_labels, col_labels: R and C tick labels.
        vmin, vmax: colour range (default: the finite min and max).
        title, xlabel, ylabel, colorbar_label: texts.
        annotate: print each cell's value (two decimals) in it.

    Returns:
        ``path``; the PNG is at least 675 x 525 pixels and grows with R and C.

    Raises:
        DataError: ``matrix`` is not a non-empty 2-D array.
        ConfigError: label counts do not match, or matplotlib is not installed.
    """
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise DataError(f"heatmap matrix must be a non-empty 2-D (R, C) array, got shape {m.shape}")
    R, C = m.shape
    for what, labels, n in (("row_labels", row_labels, R), ("col_labels", col_labels, C)):
        if labels is not None and len(labels) != n:
            raise ConfigError(f"{what} has {len(labels)} entries, expected {n} for a {R}x{C} matrix")
    finite = m[np.isfinite(m)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    hi = hi if hi > lo else lo + 1.0

    fig = _new_figure(max(4.5, 2.2 + 0.75 * C), max(3.5, 1.6 + 0.38 * R))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(C), labels=list(col_labels) if col_labels is not None else range(C))
    ax.set_yticks(range(R), labels=list(row_labels) if row_labels is not None else range(R))
    if col_labels is not None and max((len(str(t)) for t in col_labels), default=0) > 6:
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_xticks(np.arange(-0.5, C), minor=True)
    ax.set_yticks(np.arange(-0.5, R), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    if annotate and R <= 30 and C <= 30:
        cmap = image.get_cmap()
        for r in range(R):
            for c in range(C):
                if np.isfinite(m[r, c]):
                    red, green, blue, _ = cmap((m[r, c] - lo) / (hi - lo))
                    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                    ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=8, color="w" if dark else "k")
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    if colorbar_label:
        bar.set_label(colorbar_label)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return _save(fig, path)


def overlay_figure(
    image_slice: np.ndarray,
    labels_slice: np.ndarray,
    path: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    window: tuple[float, float] | None = None,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    title: str | None = None,
    intensity_label: str = "intensity",
    alpha: float = 0.45,
    outline: bool = True,
) -> Path:
    """Write a grey image slice with its labels in colour, a legend of the label names, a colour bar of
    the grey window and axes in millimetres.

    Args:
        image_slice: (H, W) float; row 0 is drawn at the top.
        labels_slice: (H, W) int label values (0 = background, transparent).
        path: the PNG to write.
        label_names: names of label values 0..K-1 (colours from :func:`~MaskMedCore.visual.png.label_colors`);
            default ``label 1``, ``label 2``, ...
        window: (low, high) intensities shown black to white (default: the 1st and 99.5th percentiles).
        pixel_spacing: (row, column) spacing in mm, for the aspect ratio and the axes.
        title: text above the image.
        intensity_label: the colour bar's label (``HU`` for CT).
        alpha: label opacity inside each label.
        outline: draw each label's outline at full colour.

    Returns:
        ``path``; the PNG is at least 750 pixels wide.

    Raises:
        DataError: shapes differ, labels are not non-negative integers, or a label has no name.
        ConfigError: bad window or alpha, or matplotlib is not installed.
    """
    img = np.asarray(image_slice, np.float64)
    lab = np.asarray(labels_slice)
    if img.ndim != 2 or img.shape != lab.shape:
        raise DataError(f"image_slice and labels_slice must be 2-D (H, W) of one shape, got {img.shape}, {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer) or (lab.size and lab.min() < 0):
        raise DataError(f"labels_slice must hold non-negative integers, got dtype {lab.dtype}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}")
    max_label = int(lab.max()) if lab.size else 0
    if label_names is None:
        label_names = ["background", *(f"label {k}" for k in range(1, max_label + 1))]
    if max_label >= len(label_names):
        raise DataError(f"labels_slice has label {max_label} but label_names only names 0..{len(label_names) - 1}")
    if window is None:
        window = tuple(float(v) for v in np.percentile(img, (1.0, 99.5))) if img.size else (0.0, 1.0)
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ConfigError(f"window must be (low, high) with high > low, got {window!r}")

    H, W = img.shape
    row_mm, col_mm = (float(s) for s in pixel_spacing)
    extent = (0.0, W * col_mm, H * row_mm, 0.0)  # left, right, bottom, top: row 0 at the top
    aspect_hw = (H * row_mm) / max(W * col_mm, 1e-9)
    width = 5.6
    fig = _new_figure(width, float(np.clip(width * aspect_hw * 0.8 + 0.9, 3.5, 9.0)))
    ax = fig.add_subplot()
    grey = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    colors = label_colors(len(label_names), list(label_names)).astype(np.float64) / 255.0
    rgba = np.zeros((H, W, 4))
    rgba[..., :3] = colors[lab]
    rgba[..., 3] = np.where(lab > 0, alpha, 0.0)
    if outline:
        p = np.pad(lab, 1, mode="edge")
        edge = (p[:-2, 1:-1] != lab) | (p[2:, 1:-1] != lab) | (p[1:-1, :-2] != lab) | (p[1:-1, 2:] != lab)
        rgba[..., 3] = np.where(edge & (lab > 0), 1.0, rgba[..., 3])
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    from matplotlib.patches import Patch

    present = [k for k in range(1, len(label_names)) if (lab == k).any()]
    if present:
        handles = [Patch(facecolor=colors[k], edgecolor=colors[k], label=str(label_names[k])) for k in present]
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    if title:
        ax.set_title(title)
    bar = fig.colorbar(grey, ax=ax, shrink=0.85)
    bar.set_label(intensity_label)
    return _save(fig, path)
