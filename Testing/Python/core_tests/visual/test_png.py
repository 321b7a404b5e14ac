"""PNG figures without matplotlib: encoder, viridis, label colours, heatmaps and CT overlays."""

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.visual import (
    DEFAULT_LABEL_NAMES,
    colormap_viridis,
    encode_png,
    heatmap_png,
    label_colors,
    overlay_png,
    render_text,
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


def test_heatmap_cells_grid_and_endpoints(tmp_path):
    matrix = np.array([[0.0, 1.0, 2.0], [3.0, np.nan, 6.0]])  # (R, C) = (2, 3)
    path = heatmap_png(matrix, tmp_path / "h.png", cell=10)
    _only_file(tmp_path, "h.png")
    rgb = _read(path)
    assert rgb.shape == (2 * 10 + 1, 3 * 10 + 1, 3)

    def cell(r, c):
        return tuple(rgb[r * 10 + 5, c * 10 + 5])

    assert cell(0, 0) == VIRIDIS_LOW and cell(1, 2) == VIRIDIS_HIGH
    assert cell(0, 2) == tuple(colormap_viridis(np.array(2 / 6)))
    assert cell(1, 1) == GREY  # NaN
    assert tuple(rgb[0, 3]) == WHITE and tuple(rgb[10, 3]) == WHITE and tuple(rgb[-1, -1]) == WHITE


def test_heatmap_vmin_vmax_clip(tmp_path):
    rgb = _read(heatmap_png(np.array([[-5.0, 0.5, 9.0]]), tmp_path / "h.png", cell=6, vmin=0.0, vmax=1.0))
    assert tuple(rgb[3, 3]) == VIRIDIS_LOW and tuple(rgb[3, 15]) == VIRIDIS_HIGH
    assert tuple(rgb[3, 9]) == tuple(colormap_viridis(np.array(0.5)))
    flat = _read(heatmap_png(np.full((2, 2), 4.0), tmp_path / "flat.png", cell=6))
    assert tuple(flat[3, 3]) == VIRIDIS_LOW  # constant matrix: no division by zero


def test_heatmap_with_labels_adds_margins_with_text(tmp_path):
    matrix = np.arange(6, dtype=float).reshape(2, 3)
    rows, cols = ["liver", "spleen"], ["q0", "q1", "q2"]
    rgb = _read(heatmap_png(matrix, tmp_path / "h.png", cell=24, row_labels=rows, col_labels=cols))
    left = render_text("spleen", 2).shape[1] + 4  # longest row label + padding
    top = render_text("q0", 2).shape[1] + 4  # column labels are rotated
    assert rgb.shape == (top + 2 * 24 + 1, left + 3 * 24 + 1, 3)
    assert tuple(rgb[top + 12, left + 12]) == VIRIDIS_LOW
    assert tuple(rgb[top + 24 + 12, left + 2 * 24 + 12]) == VIRIDIS_HIGH
    margin_left, margin_top = rgb[top:, :left], rgb[:top, left:]
    assert (margin_left == 0).all(axis=-1).any() and (margin_top == 0).all(axis=-1).any()  # black text
    assert tuple(rgb[0, 0]) == WHITE
    with pytest.raises(ConfigError, match="row_labels"):
        heatmap_png(matrix, tmp_path / "bad.png", row_labels=["one"])
    with pytest.raises(DataError, match="2-D"):
        heatmap_png(np.zeros(3), tmp_path / "bad.png")


def test_render_text_size_and_unknown_characters():
    assert render_text("AB", 1).shape == (5, 7)
    assert render_text("ab", 3).shape == (15, 21)
    np.testing.assert_array_equal(render_text("é"), render_text("?"))


def test_overlay_blends_labels_and_keeps_background_grey(tmp_path):
    image = np.tile(np.linspace(-150.0, 250.0, 16), (12, 1))  # (H, W) = (12, 16) ramp over the window
    labels = np.zeros((12, 16), np.int64)
    labels[2:8, 3:9] = 1
    labels[9:12, 10:16] = 2
    colors = label_colors(3)
    path = overlay_png(image, labels, tmp_path / "o.png", alpha=0.5)
    _only_file(tmp_path, "o.png")
    rgb = _read(path).astype(int)
    assert rgb.shape == (12, 16, 3)
    grey = np.rint(np.clip((image + 150.0) / 400.0, 0, 1) * 255)
    np.testing.assert_array_equal(rgb[0, :, 0], grey[0])  # background row untouched, grey
    assert (rgb[0, :, 0] == rgb[0, :, 1]).all()
    inner = np.rint(0.5 * grey[4, 5] + 0.5 * colors[1].astype(float))
    np.testing.assert_array_equal(rgb[4, 5], inner)  # interior: 50 % blend
    np.testing.assert_array_equal(rgb[2, 5], colors[1])  # boundary: full colour outline
    np.testing.assert_array_equal(rgb[9, 12], colors[2])  # top edge of label 2 is outlined ...
    np.testing.assert_array_equal(
        rgb[11, 12], np.rint(0.5 * grey[11, 12] + 0.5 * colors[2])
    )  # ... the image border not
    big = _read(overlay_png(image, labels, tmp_path / "big.png", scale=3, outline=False))
    assert big.shape == (36, 48, 3)


def test_overlay_rejects_bad_input(tmp_path):
    image = np.zeros((4, 4))
    with pytest.raises(DataError, match="label 5"):
        overlay_png(image, np.full((4, 4), 5), tmp_path / "o.png", colors=label_colors(3))
    with pytest.raises(DataError, match="shape"):
        overlay_png(image, np.zeros((4, 5), int), tmp_path / "o.png")
    with pytest.raises(DataError, match="integers"):
        overlay_png(image, np.zeros((4, 4)), tmp_path / "o.png")
    with pytest.raises(ConfigError, match="window"):
        overlay_png(image, np.zeros((4, 4), int), tmp_path / "o.png", window=(100, 0))
    with pytest.raises(ConfigError, match="alpha"):
        overlay_png(image, np.zeros((4, 4), int), tmp_path / "o.png", alpha=1.5)
    assert list(tmp_path.iterdir()) == []
