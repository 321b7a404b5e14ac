"""``maskmed evaluate`` on 2D label images (PNG, BMP, TIFF): the values worked out by hand."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.cli import main


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_evaluate_scores_2d_label_images(tmp_path, ending):
    ref = np.zeros((40, 48), np.uint8)
    ref[10:20, 10:25] = 1  # 150 pixels
    ref[25:35, 30:40] = 2  # 100 pixels
    pred = np.zeros_like(ref)
    pred[11:20, 10:26] = 1  # 144 pixels, 135 shared
    pred[25:33, 30:40] = 2  # 80 pixels, all shared; its far edge 2 rows short
    for folder, array in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / f"case1{ending}"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 0
    report = json.loads((tmp_path / "pred" / "evaluation.json").read_text())
    per_class = report["per_class"]
    assert per_class["1"]["dice"] == pytest.approx(2 * 135 / (150 + 144))
    assert per_class["2"]["dice"] == pytest.approx(2 * 80 / (100 + 80))
    assert per_class["2"]["hd95"] == pytest.approx(2.0)  # 1 mm pixels: the missing rows are 2 pixels away
