"""Pictures: a dependency-free PNG writer, colour tables and small heatmaps/overlays (``png``), icons,
VTK renders (``render``), and readable matplotlib figures for the CLI (``figures``; matplotlib is the
optional ``plot`` extra, imported only there)."""

from MaskMedCore.visual.png import (
    DEFAULT_LABEL_NAMES,
    SLICER_ORGAN_COLORS,
    colormap_viridis,
    encode_png,
    heatmap_png,
    label_colors,
    overlay_png,
    render_text,
    write_png,
)

__all__ = [
    "DEFAULT_LABEL_NAMES",
    "SLICER_ORGAN_COLORS",
    "colormap_viridis",
    "encode_png",
    "heatmap_png",
    "label_colors",
    "overlay_png",
    "render_text",
    "write_png",
]
