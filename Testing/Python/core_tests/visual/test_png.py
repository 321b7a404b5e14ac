"""PNG figures without matplotlib: encoder, viridis, label colours, heatmaps and CT overlays."""

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.visual import (
    DEFAULT_LABEL_NAMES,
    colormap_viridis,
    encode_png,
    label_colors,
    write_png,
)

VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 37)
GREY, WHITE = (128, 128, 128), (255, 255, 255)


def _read(path):
    """A PNG re-read with SimpleITK: (H, W, 3) uint8."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _only_file(folder, name):
    assert [p.name for p in folder.iterdir()] == [name]  # no temp file left beside it


def test_encoder_round_trips_through_simpleitk(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_png(rgb, tmp_path / "a.png")
    np.testing.assert_array_equal(_read(tmp_path / "a.png"), rgb)
    grey = rng.integers(0, 256, (4, 9), dtype=np.uint8)
    (tmp_path / "g.png").write_bytes(encode_png(grey))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "g.png"))), grey)
    with pytest.raises(DataError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_viridis_endpoints_clipping_and_nan():
    table = colormap_viridis(np.array([0.0, 1.0, -3.0, 7.0, np.nan]))
    assert table.shape == (5, 3) and table.dtype == np.uint8
    assert [tuple(c) for c in table] == [VIRIDIS_LOW, VIRIDIS_HIGH, VIRIDIS_LOW, VIRIDIS_HIGH, VIRIDIS_LOW]
    ramp = colormap_viridis(np.linspace(0, 1, 50)).astype(float)
    luminance = ramp @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luminance) > 0).all()  # viridis is perceptually monotone
    assert colormap_viridis(np.zeros((2, 3))).shape == (2, 3, 3)


def test_label_colors_follow_slicer_and_stay_distinct():
    colors = label_colors(6)
    assert colors.shape == (6, 3) and colors.dtype == np.uint8
    assert tuple(colors[0]) == (0, 0, 0)
    assert tuple(colors[DEFAULT_LABEL_NAMES.index("liver")]) == (221, 130, 101)
    assert tuple(colors[DEFAULT_LABEL_NAMES.index("spleen")]) == (157, 108, 162)
    many = label_colors(20)
    assert len({tuple(c) for c in many}) == 20
    named = label_colors(3, names=["background", "Gallbladder", "tumour"])
    assert tuple(named[1]) == (139, 150, 98)
    with pytest.raises(ConfigError, match="names"):
        label_colors(3, names=["background"])
    with pytest.raises(ConfigError, match="num_labels"):
        label_colors(0)


def test_default_label_names_match_the_phantom():
    from MaskMedCore.data.phantom import PHANTOM_LABELS

    assert list(DEFAULT_LABEL_NAMES) == sorted(PHANTOM_LABELS, key=PHANTOM_LABELS.get)
