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

from MaskMedSlicerLib.terminology import standard_term

Color = tuple[float, float, float]

_VIRIDIS_ANCHORS = np.array(
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
    t = np.nan_to_num(np.clip(np.asarray(values, np.float64), 0.0, 1.0), nan=0.0) * (len(_VIRIDIS_ANCHORS) - 1)
    lo = np.minimum(np.floor(t).astype(int), len(_VIRIDIS_ANCHORS) - 2)
    frac = (t - lo)[..., None]
    return (_VIRIDIS_ANCHORS[lo] * (1 - frac) + _VIRIDIS_ANCHORS[lo + 1] * frac) / 255.0
