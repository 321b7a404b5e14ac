"""The embedded default job: the bundled demo model segments a fresh phantom well and quickly."""

import json

import pytest

from MaskMedCore.cli import main
from MaskMedCore.demo import DEMO_SEED, find_demo_model
from MaskMedCore.engine.checkpoint import load_checkpoint


def test_bundled_demo_model_is_a_phantom_model_of_plain_data():
    ckpt = load_checkpoint(find_demo_model())
    assert ckpt.plan.dataset_name == "MaskMedPhantom"  # made by our own generator, not real data
    assert ckpt.label_names == ["background", "liver", "spleen", "kidney_left", "kidney_right", "aorta"]
    assert ckpt.model_config.head == "decoupled" and ckpt.model_config.bridge == "fsad"
    assert DEMO_SEED >= 12  # never a training phantom (seeds 0..11)


@pytest.mark.slow
def test_demo_segments_a_fresh_phantom_in_under_a_minute(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--progress", "none"]) == 0
    report = json.loads((out / "report.json").read_text())
    print(capsys.readouterr().out)
    assert report["mean_dice"] >= 0.85, report["dice"]
    assert report["total_seconds"] < 60
    for name in (
        "phantom.nii.gz",
        "phantom_queries",
        "class_probabilities.png",
        "overlay_prediction.png",
        "phantom_embeddings.npz",
        "phantom_summary.json",
    ):
        assert (out / name).exists(), name
    assert len(list((out / "phantom_queries").iterdir())) == 6
