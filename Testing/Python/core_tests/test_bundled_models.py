"""The bundled models: lookup by name, their model cards (one JSON per model, the Markdown rendered from
it), the hippocampus model's licence and held-out sample case, ``maskmed models`` and ``predict -m NAME``."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore import bundled_models
from MaskMedCore.bundled_models import (
    BUNDLED_NAMES,
    bundled_model,
    checkpoint_mismatch,
    install_checkpoint,
    resolve_model,
)
from MaskMedCore.cli import main
from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.errors import CheckpointError, ConfigError
from MaskMedCore.model_card import card_from_dict, render_model_card

REPO = Path(__file__).resolve().parents[3]
HIPPOCAMPUS_DIR = REPO / "Resources" / "HippocampusModel"
SPLIT_FILE = REPO / "Testing" / "Benchmarks" / "splits" / "msd_hippocampus.json"
ATTRIBUTION = ("CC-BY-SA 4.0", "Medical Segmentation Decathlon", "Vanderbilt University Medical Center")


def _card_json() -> dict:
    return json.loads((HIPPOCAMPUS_DIR / "model_card.json").read_text())


# ------------------------------------------------------------------------------------------- lookup


def test_both_models_are_bundled_with_their_cards():
    assert BUNDLED_NAMES == ("phantom", "hippocampus")
    phantom, hippocampus = (bundled_model(n) for n in BUNDLED_NAMES)
    assert phantom.checkpoint == REPO / "Resources" / "DemoModel" / "maskmed_demo_phantom.pt"
    assert hippocampus.checkpoint == HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt"
    assert hippocampus.card.source == HIPPOCAMPUS_DIR / "model_card.json"
    assert hippocampus.card.classes == ("anterior", "posterior")
    assert hippocampus.card.input.channels == ("MRI",) and "T1" in hippocampus.card.input.modality
    assert hippocampus.card.input.spacing_mm == (1.0, 1.0, 1.0)
    assert phantom.card.licence == "Apache-2.0" and hippocampus.card.licence == "CC-BY-SA 4.0"


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_checkpoints_fit_their_cards(name):
    model = bundled_model(name)
    ckpt = load_checkpoint(model.checkpoint)
    assert checkpoint_mismatch(model.card, ckpt.label_names, ckpt.plan.channel_names) == ""


def test_hippocampus_model_was_trained_on_mri_not_brats():
    ckpt = load_checkpoint(bundled_model("hippocampus").checkpoint)
    assert list(ckpt.plan.channel_names) == ["MRI"]
    assert "brats" not in ckpt.plan.dataset_name.lower()
    assert "hippocampus" in ckpt.plan.dataset_name.lower()


def test_names_resolve_and_paths_win(tmp_path, monkeypatch):
    assert resolve_model("hippocampus") == HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt"
    assert resolve_model("phantom") == REPO / "Resources" / "DemoModel" / "maskmed_demo_phantom.pt"
    (tmp_path / "hippocampus").mkdir()  # an existing path wins over a bundled name
    monkeypatch.chdir(tmp_path)
    assert resolve_model("hippocampus") == Path("hippocampus")
    with pytest.raises(CheckpointError, match=r"'hipocampus' is neither .* \(phantom, hippocampus\).*maskmed models"):
        resolve_model("hipocampus")


def test_unknown_bundled_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown bundled model 'liver'; bundled models: phantom, hippocampus"):
        bundled_model("liver")


def test_environment_overrides_the_checkpoint_only(tmp_path, monkeypatch):
    other = tmp_path / "other.pt"
    shutil.copyfile(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt", other)
    monkeypatch.setenv("MASKMED_HIPPOCAMPUS_MODEL", str(other))
    model = bundled_model("hippocampus")
    assert model.checkpoint == other and model.card.source == HIPPOCAMPUS_DIR / "model_card.json"
    monkeypatch.setenv("MASKMED_HIPPOCAMPUS_MODEL", str(tmp_path / "missing.pt"))
    assert bundled_model("hippocampus").checkpoint == HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt"


def test_missing_checkpoint_says_where_it_looked(tmp_path, monkeypatch):
    folder = tmp_path / "HippocampusModel"
    folder.mkdir()
    shutil.copyfile(HIPPOCAMPUS_DIR / "model_card.json", folder / "model_card.json")
    monkeypatch.setattr(bundled_models, "_folder_candidates", lambda name: [tmp_path / name])
    model = bundled_model("hippocampus")
    assert not model.available and model.searched == (folder / "maskmed_hippocampus.pt",)
    with pytest.raises(CheckpointError, match="hippocampus model was not found.*MASKMED_HIPPOCAMPUS_MODEL"):
        resolve_model("hippocampus")
    assert [m.name for m in bundled_models.bundled_models()] == []  # the phantom folder is absent too
    assert [m.name for m in bundled_models.bundled_models(include_missing=True)] == ["phantom", "hippocampus"]


# ---------------------------------------------------------------------------------------- model card


def test_markdown_card_is_rendered_from_the_json_card():
    card = bundled_model("hippocampus").card
    committed = (HIPPOCAMPUS_DIR / "MODEL_CARD.md").read_text()
    assert committed == render_model_card(card), (
        "Resources/HippocampusModel/MODEL_CARD.md is stale: run 'maskmed models --write-cards' after editing "
        "model_card.json"
    )
    for needed in ("msd_hippocampus.json", "maskmed train", "maskmed evaluate", "Dice", *ATTRIBUTION):
        assert needed in committed, needed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"status": "done"}, r"status is 'done'; expected one of \['placeholder', 'final'\]"),
        (
            {"status": "final", "evaluation": {"dice": {"anterior": None, "posterior": None}}},
            "status is 'final' but evaluation.dice has no number",
        ),
        ({"classes": []}, "classes must be a non-empty list"),
        ({"format_version": 2}, "expected 'maskmed-model-card'/1"),
        ({"evaluation": {"dice": {"anterior": 1.2, "posterior": None}}}, r"Dice score and must be in \[0, 1\]"),
        ({"evaluation": {"dice": {"anterior": 0.9}}}, "must map each class"),
        ({"input": {"modality": "MRI", "channels": ["MRI"], "slices": 3}}, r"input: unknown field\(s\) \['slices'\]"),
        ({"licence": {"name": "x", "url": "y", "attribution": "z", "file": 3}}, "field 'file' must be str"),
    ],
)
def test_bad_cards_are_refused_naming_the_field(change, message):
    data = {**_card_json(), **change}
    with pytest.raises(ConfigError, match=message):
        card_from_dict(data, source="model_card.json", folder=HIPPOCAMPUS_DIR)


def test_shipped_hippocampus_card_is_final():
    """The committed checkpoint is the trained model, never the development placeholder."""
    card = bundled_model("hippocampus").card
    assert not card.is_placeholder and min(card.test_dice.values()) >= 0.85, card.test_dice


def test_final_card_with_numbers_is_accepted():
    data = _card_json()
    data["status"] = "final"
    data["evaluation"] = {**data["evaluation"], "dice": {"anterior": 0.885, "posterior": 0.870}, "mean_dice": 0.878}
    card = card_from_dict(data, source="model_card.json", folder=HIPPOCAMPUS_DIR)
    assert card.test_dice == {"anterior": 0.885, "posterior": 0.870} and not card.is_placeholder
    assert "test Dice: anterior 0.885, posterior 0.870" in card.describe()
    assert "| anterior | 0.885 |" in render_model_card(card)


# ------------------------------------------------------------------------------- licence and sample


def test_licence_and_attribution_ship_beside_the_weights():
    card = bundled_model("hippocampus").card
    licence = card.licence_file.read_text()
    for needed in (*ATTRIBUTION, "Attribution-ShareAlike 4.0 International Public License", "maskmed_hippocampus.pt"):
        assert needed in licence, needed
    for needed in ATTRIBUTION[1:]:
        assert needed in card.attribution
    readme = card.sample.readme.read_text()
    for needed in (*ATTRIBUTION, "hippocampus_003", "test"):
        assert needed in readme, needed


@pytest.mark.realdata
def test_sample_case_is_a_held_out_test_case_copied_unchanged(shared_data):
    sample = bundled_model("hippocampus").card.sample
    split = json.loads(SPLIT_FILE.read_text())
    assert sample.split == "test" and sample.case in split["test"]
    assert sample.case not in split["train"] + split["val"]  # the model is trained on train + val only
    source = shared_data / "msd_hippocampus"
    assert sample.image.read_bytes() == (source / "imagesTr" / f"{sample.case}.nii.gz").read_bytes()
    assert sample.label.read_bytes() == (source / "labelsTr" / f"{sample.case}.nii.gz").read_bytes()


def test_sample_checksums_and_geometry_match_the_card():
    sample = bundled_model("hippocampus").card.sample
    assert hashlib.sha256(sample.image.read_bytes()).hexdigest() == sample.image_sha256
    assert hashlib.sha256(sample.label.read_bytes()).hexdigest() == sample.label_sha256
    image, label = sitk.ReadImage(str(sample.image)), sitk.ReadImage(str(sample.label))
    assert image.GetSize() == label.GetSize() == (34, 52, 35)
    assert image.GetSpacing() == label.GetSpacing() == (1.0, 1.0, 1.0)
    assert image.GetOrigin() == label.GetOrigin() and image.GetDirection() == label.GetDirection()
    values, counts = np.unique(sitk.GetArrayFromImage(label), return_counts=True)
    assert values.tolist() == [0, 1, 2] and counts[1:].tolist() == [1550, 1803]  # both classes present


# --------------------------------------------------------------------------------------------- install


def _tmp_bundle(tmp_path, monkeypatch) -> Path:
    """A copy of the hippocampus folder's card and licence, found instead of the repository's."""
    folder = tmp_path / "HippocampusModel"
    folder.mkdir()
    for name in ("model_card.json", "LICENSE.txt"):
        shutil.copyfile(HIPPOCAMPUS_DIR / name, folder / name)
    monkeypatch.setattr(bundled_models, "_folder_candidates", lambda name: [tmp_path / name])
    return folder


def test_install_keeps_the_weights_and_drops_the_training_state(tmp_path, monkeypatch, quick_run):
    source = load_checkpoint(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt", run / "checkpoint_best.pt")
    folder = _tmp_bundle(tmp_path, monkeypatch)
    assert main(["models", "--install", "hippocampus", str(run)]) == 0  # a run folder: its best checkpoint
    installed = load_checkpoint(folder / "maskmed_hippocampus.pt")
    assert installed.training_state == {} and installed.label_names == source.label_names
    assert all(np.array_equal(installed.model_state[k], v) for k, v in source.model_state.items())
    # a phantom run does not fit the hippocampus card: refused, naming both class lists
    with pytest.raises(CheckpointError, match="segments .*liver.* the card lists classes .*anterior"):
        install_checkpoint("hippocampus", quick_run)


# --------------------------------------------------------------------------------------------- CLI


def test_models_command_lists_path_classes_licence_and_input(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for needed in ("phantom", "hippocampus", "anterior, posterior", "CC-BY-SA 4.0", "Apache-2.0", "T1-weighted MRI"):
        assert needed in out, needed
    assert str(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt") in out
    assert main(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["hippocampus"]["classes"] == ["anterior", "posterior"]
    assert listed["hippocampus"]["sample_case"]["case"] == "hippocampus_003"


def test_models_command_does_not_import_torch():
    code = "import sys; from MaskMedCore.cli import main; main(['models']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_predict_accepts_a_bundled_name(tmp_path, capsys):
    sample = bundled_model("hippocampus").card.sample
    out = tmp_path / "pred"
    argv = ["predict", "-m", "hippocampus", "-i", str(sample.image), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--progress", "none"]) == 0
    labels = sitk.ReadImage(str(out / "hippocampus_003.nii.gz"))
    image = sitk.ReadImage(str(sample.image))
    assert labels.GetSize() == image.GetSize() and labels.GetOrigin() == image.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(labels)).tolist()) <= {0, 1, 2}
    assert main(["predict", "-m", "hipocampus", "-i", str(sample.image), "-o", str(out)]) == 2
    assert "run 'maskmed models'" in capsys.readouterr().err
