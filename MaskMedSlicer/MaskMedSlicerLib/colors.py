"""Colours of the module's outputs: one per class, and viridis for probability overlays.

Classes with a standard term (:mod:`.terminology`) get Slicer's recommended colour; the others a fixed
golden-angle palette (bright, saturated, the same for a label value in every run). Viridis is sampled
from 9 anchors of matplotlib's table (as R's ``viridisLite::viridis(9)`` lists them), linearly
interpolated; no plotting library is needed inside Slicer.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from MaskMedCore.visual.png import viridis_rgb
from MaskMedSlicerLib.terminology import standard_term

Color = tuple[float, float, float]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def default_label_colors(label_names: Sequence[str]) -> list[Color]:
    """One RGB colour in 0..1 per label value (K); entry 0, the background, is black."""
    colors: list[Color] = [(0.0, 0.0, 0.0)]
    for k, name in enumerate(list(label_names)[1:], start=1):
        term = standard_term(str(name))
        if term is not None and term.color is not None:
            colors.append(tuple(c / 255.0 for c in term.color))
        else:
            hue = (k * _GOLDEN_RATIO_CONJUGATE) % 1.0
            colors.append(colorsys.hsv_to_rgb(hue, 0.65, 0.95))
    return colors


def viridis(values) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to viridis: (...) -> (..., 3) float64 RGB in 0..1."""
    return viridis_rgb(values) / 255.0
