"""The icon generator and the off-screen 3D render of a label map."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.visual.icons import ICON_FILES, draw_icon, write_icon

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("variant", ["extension", "module"])
def test_icon_is_rgb_and_deterministic(variant):
    icon = draw_icon(128, variant)
    assert icon.shape == (128, 128, 3) and icon.dtype == np.uint8
    np.testing.assert_array_equal(icon, draw_icon(128, variant))
    assert tuple(icon[0, 0]) == (255, 255, 255)  # outside the rounded tile
    assert len(np.unique(icon.reshape(-1, 3), axis=0)) > 100


def test_variants_differ_and_sizes_scale():
    assert not np.array_equal(draw_icon(64, "extension"), draw_icon(64, "module"))
    assert draw_icon(32).shape == (32, 32, 3)


@pytest.mark.parametrize(("size", "variant"), [(8, "extension"), (True, "module"), (128, "toolbar")])
def test_icon_bad_arguments(size, variant):
    with pytest.raises(ConfigError):
        draw_icon(size, variant)


@pytest.mark.parametrize(("relative", "variant"), ICON_FILES)
def test_shipped_icons_are_the_generated_ones(relative, variant, tmp_path):
    """The committed PNGs are exactly what the generator draws (regenerate them after changing it)."""
    fresh = sitk.GetArrayFromImage(sitk.ReadImage(str(write_icon(tmp_path / "icon.png", variant))))
    shipped = sitk.GetArrayFromImage(sitk.ReadImage(str(REPO / relative)))
    np.testing.assert_array_equal(shipped, fresh)


def _labels():
    array = np.zeros((20, 24, 28), np.uint8)
    array[4:12, 5:15, 6:16] = 1
    array[10:16, 14:20, 16:24] = 2
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.0, 2.0))
    return image


def test_render_writes_a_picture_with_both_label_colours(tmp_path):
    pytest.importorskip("vtkmodules")
    from MaskMedCore.visual.render import render_segmentation_png

    path = render_segmentation_png(
        _labels(), tmp_path / "r.png", {1: (255, 0, 0), 2: (0, 0, 255)}, size=(160, 120), azimuth=0, elevation=30
    )
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert rgb.shape == (120, 160, 3)
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    assert ((r > 2 * g + 40) & (r > 2 * b + 40)).sum() > 50, "no red (label 1) surface"
    assert ((b > 2 * r + 40) & (b > 2 * g + 40)).sum() > 50, "no blue (label 2) surface"


def test_render_rejects_bad_input(tmp_path):
    from MaskMedCore.visual.render import render_segmentation_png

    with pytest.raises(DataError):
        render_segmentation_png(sitk.Image(8, 8, 8, sitk.sitkUInt8), tmp_path / "x.png", {1: (1, 2, 3)})
    with pytest.raises(ConfigError):
        render_segmentation_png(_labels(), tmp_path / "x.png", {1: (1, 2, 3)})  # no colour for label 2
    with pytest.raises(DataError):
        render_segmentation_png(sitk.Image(8, 8, 8, sitk.sitkFloat32), tmp_path / "x.png", {1: (1, 2, 3)})
    with pytest.raises(ConfigError):
        render_segmentation_png(_labels(), tmp_path / "x.png", {1: (1, 2, 3), 2: (4, 5, 6)}, size=(4, 4))
    assert not list(tmp_path.iterdir())
