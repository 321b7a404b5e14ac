"""The embedded default job: ``maskmed demo`` segments the bundled real hippocampus case with the bundled
hippocampus model and scores it against its manual labels, quickly; ``--phantom`` keeps the synthetic
CT phantom demo (the bundled phantom model segments a fresh phantom well)."""

import json

import pytest

from MaskMedCore import bundled_models
from MaskMedCore.bundled_models import bundled_model
from MaskMedCore.cli import main
from MaskMedCore.demo import DEMO_SEED, find_demo_model, run_demo
from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.errors import CheckpointError

HIPPOCAMPUS_OUTPUTS = (
    "hippocampus_003.nii.gz",
    "hippocampus_003_mri.nii.gz",
    "hippocampus_003_reference.nii.gz",
    "hippocampus_003_queries",
    "hippocampus_003_embeddings.npz",
    "hippocampus_003_summary.json",
    "class_probabilities.png",
    "overlay_prediction.png",
    "overlay_reference.png",
    "report.json",
)


def test_bundled_demo_model_is_a_phantom_model_of_plain_data():
    ckpt = load_checkpoint(find_demo_model())
    assert ckpt.plan.dataset_name == "MaskMedPhantom"  # made by our own generator, not real data
    assert ckpt.label_names == ["background", "liver", "spleen", "kidney_left", "kidney_right", "aorta"]
    assert ckpt.model_config.head == "decoupled" and ckpt.model_config.bridge == "fsad"
    assert DEMO_SEED >= 12  # never a training phantom (seeds 0..11)


@pytest.fixture(scope="module")
def hippocampus_demo(tmp_path_factory):
    """``maskmed demo`` exactly as README's Quick start runs it (plus the CPU), once for this module."""
    out = tmp_path_factory.mktemp("demo") / "maskmed-demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_demo_segments_the_real_held_out_hippocampus_case(hippocampus_demo, capsys):
    out, report = hippocampus_demo
    card = bundled_model("hippocampus").card
    assert report["demo"] == "hippocampus" and report["model_name"] == "hippocampus"
    assert report["case"] == card.sample.case == "hippocampus_003" and report["case_split"] == "test"
    assert "CC-BY-SA 4.0" in report["case_licence"] and "Medical Segmentation Decathlon" in report["case_licence"]
    assert [c.lower() for c in report["dice"]] == list(card.classes)
    assert all(0.0 <= d <= 1.0 for d in report["dice"].values())
    assert report["mean_dice"] == pytest.approx(sum(report["dice"].values()) / len(report["dice"]))
    # the manual label's volumes: 1550 anterior and 1803 posterior voxels of 1 mm^3
    assert list(report["reference_volumes_ml"].values()) == pytest.approx([1.550, 1.803])
    assert report["total_seconds"] < 60 and report["predict_seconds"] < report["total_seconds"]
    for name in HIPPOCAMPUS_OUTPUTS:
        assert (out / name).exists(), name
    assert sorted(report["outputs"]) == sorted(p.name for p in out.iterdir())
    assert len(list((out / "hippocampus_003_queries").iterdir())) == len(report["queries"])


def test_demo_copies_the_case_unchanged(hippocampus_demo):
    out, _ = hippocampus_demo
    sample = bundled_model("hippocampus").card.sample
    assert (out / "hippocampus_003_mri.nii.gz").read_bytes() == sample.image.read_bytes()
    assert (out / "hippocampus_003_reference.nii.gz").read_bytes() == sample.label.read_bytes()


def test_final_hippocampus_model_segments_the_sample_well(hippocampus_demo):
    _, report = hippocampus_demo
    assert report["model_status"] == "final"
    # the final model scores 0.880 mean Dice over the 40 test cases (0.883 on this one); one case varies
    assert report["mean_dice"] >= 0.75, report["dice"]
    assert min(report["dice"].values()) >= 0.7, report["dice"]


def test_demo_without_the_hippocampus_model_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bundled_models, "_folder_candidates", lambda folder: [tmp_path / "nowhere" / folder])
    with pytest.raises(CheckpointError, match="hippocampus model's card was not found"):
        run_demo(tmp_path / "out", device="cpu")
    assert main(["demo", "--out", str(tmp_path / "out2"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskmed demo: error:") and "HippocampusModel" in err[0]


def test_find_demo_model_error_names_the_override(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled_models, "_folder_candidates", lambda folder: [tmp_path / folder])
    monkeypatch.setenv("MASKMED_DEMO_MODEL", str(tmp_path / "none.pt"))
    with pytest.raises(CheckpointError, match="demo model was not found.*MASKMED_DEMO_MODEL.*maskmed demo --train"):
        find_demo_model()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--phantom"], ["--seed", str(DEMO_SEED)]], ids=["phantom", "seed"])
def test_phantom_demo_segments_a_fresh_phantom_in_under_a_minute(tmp_path, capsys, argv):
    out = tmp_path / "demo"
    assert main(["demo", *argv, "--out", str(out), "--device", "cpu", "--progress", "none"]) == 0
    report = json.loads((out / "report.json").read_text())
    print(capsys.readouterr().out)
    assert report["demo"] == "phantom" and report["phantom_seed"] == DEMO_SEED
    assert report["mean_dice"] >= 0.85, report["dice"]
    assert report["total_seconds"] < 60
    for name in (
        "phantom.nii.gz",
        "phantom_ct.nii.gz",
        "phantom_queries",
        "class_probabilities.png",
        "overlay_prediction.png",
        "phantom_embeddings.npz",
        "phantom_summary.json",
    ):
        assert (out / name).exists(), name
    assert len(list((out / "phantom_queries").iterdir())) == 6
