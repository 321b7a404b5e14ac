"""Small figures (PNG) without a plotting library: heatmaps and CT slice overlays."""

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
