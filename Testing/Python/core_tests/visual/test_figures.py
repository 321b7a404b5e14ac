"""Readable figures (matplotlib, the optional ``plot`` extra) and the demo without matplotlib.

The demo's heatmap used to be 200 px wide with a 3x5 pixel font and its overlays 288 px; the figures
now have real fonts, axis labels, colour bars and a legend at a readable size. Without matplotlib the
core still runs: the demo writes every other output, no PNGs, and says so once.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from MaskMedCore.errors import ConfigError, DataError

pytest.importorskip("matplotlib", reason="the figures need matplotlib (pip install -e '.[test]')")

from MaskMedCore.visual import figures  # noqa: E402

REPO = Path(__file__).resolve().parents[4]
MIN_WIDTH, MIN_HEIGHT = 600, 450  # pixels: readable on a screen and in a report


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def png_pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_heatmap_figure_is_large_and_labelled(tmp_path):
    matrix = np.random.default_rng(0).random((6, 3))
    path = figures.heatmap_figure(
        matrix,
        tmp_path / "heatmap.png",
        row_labels=[f"Q{i}" for i in range(6)],
        col_labels=["anterior", "posterior", "none"],
        vmin=0.0,
        vmax=1.0,
        xlabel="class",
        ylabel="query",
        colorbar_label="probability",
        title="class probabilities",
    )
    width, height = png_size(path)
    assert width >= MIN_WIDTH and height >= MIN_HEIGHT
    pixels = png_pixels(path)
    assert pixels.shape[:2] == (height, width) and pixels[..., :3].std() > 0.1  # a drawing, not a blank page
    bigger = figures.heatmap_figure(np.zeros((30, 8)), tmp_path / "big.png")  # grows with the matrix
    assert png_size(bigger)[0] > width and png_size(bigger)[1] > height


def test_overlay_figure_is_large(tmp_path):
    image = np.random.default_rng(1).normal(size=(36, 50))
    labels = np.zeros((36, 50), np.int64)
    labels[10:20, 10:25], labels[12:25, 26:40] = 1, 2
    path = figures.overlay_figure(
        image, labels, tmp_path / "overlay.png", label_names=["background", "anterior", "posterior"], title="t"
    )
    width, height = png_size(path)
    assert width >= MIN_WIDTH and height >= MIN_HEIGHT
    tall = figures.overlay_figure(image, labels, tmp_path / "tall.png", pixel_spacing=(3.0, 1.0))
    assert png_size(tall)[1] > height  # 3 mm rows: the figure keeps the anatomy's proportions


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p: figures.heatmap_figure(np.zeros(3), p), DataError, "2-D"),
        (lambda p: figures.heatmap_figure(np.zeros((2, 2)), p, row_labels=["a"]), ConfigError, "row_labels"),
        (lambda p: figures.overlay_figure(np.zeros((4, 4)), np.zeros((4, 5), int), p), DataError, "one shape"),
        (lambda p: figures.overlay_figure(np.zeros((4, 4)), np.full((4, 4), 0.5), p), DataError, "integers"),
        (
            lambda p: figures.overlay_figure(np.zeros((4, 4)), np.full((4, 4), 3), p, label_names=["bg", "a"]),
            DataError,
            "label 3",
        ),
        (
            lambda p: figures.overlay_figure(np.zeros((4, 4)), np.zeros((4, 4), int), p, window=(1, 1)),
            ConfigError,
            "window",
        ),
    ],
)
def test_bad_figure_arguments_raise_clear_errors(tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> tuple[Path, dict]:
    from MaskMedCore.demo import run_demo

    out = tmp_path_factory.mktemp("figures_demo")
    return out, run_demo(out, device="cpu")


def test_demo_figures_are_readable(demo_out):
    out, report = demo_out
    assert report["figures"] == "matplotlib"
    for name in ("class_probabilities.png", "overlay_prediction.png", "overlay_reference.png"):
        width, height = png_size(out / name)
        assert width >= MIN_WIDTH and height >= MIN_HEIGHT, (name, width, height)


@pytest.mark.slow
def test_demo_without_matplotlib_writes_no_pngs_and_says_so_once(tmp_path):
    blocker = tmp_path / "no_matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib' (hidden by the MaskMed test)\", name='matplotlib')\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "MaskMedCore", "demo", "--out", str(out), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("matplotlib is not installed") == 1, done.stderr
    assert 'pip install "MaskMedCore[plot]"' in done.stderr
    assert not list(out.glob("*.png"))
    report = json.loads((out / "report.json").read_text())
    assert report["figures"].startswith("none") and report["dice"]
    assert (out / "hippocampus_003.nii.gz").is_file() and (out / "hippocampus_003_queries").is_dir()
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1  # the trick really hid it
