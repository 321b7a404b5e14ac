"""Pictures: a dependency-free PNG writer and colour tables (``png``), icons,
VTK renders (``render``), and readable matplotlib figures for the CLI (``figures``; matplotlib is the
optional ``plot`` extra, imported only there)."""

from MaskMedCore.visual.png import (
    DEFAULT_LABEL_NAMES,
    SLICER_ORGAN_COLORS,
    colormap_viridis,
    encode_png,
    label_colors,
    write_png,
)

__all__ = [
    "DEFAULT_LABEL_NAMES",
    "SLICER_ORGAN_COLORS",
    "colormap_viridis",
    "encode_png",
    "label_colors",
    "write_png",
]
