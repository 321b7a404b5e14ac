"""nnU-Net v2 result folders in the model selector: read without torch, found, added, installed from a zip,
listed with their model cards; and the model card of every other kind of listed model."""

import json
import subprocess
import sys

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import (  # noqa: E402
    MaskMedLogic,
    MaskMedSlicerError,
    ModelList,
    find_models,
    install_nnunet_zip_model,
    model_card_info,
    nnunet_info,
    resolve_nnunet_folder,
    user_models_folder,
)
from MaskMedSlicerLib.model_cards import MASKMED_LICENCE_NOT_RECORDED, NNUNET_LICENCE_NOT_STATED  # noqa: E402
from MaskMedSlicerLib.models import bundled_model_entries  # noqa: E402
from MaskMedSlicerLib.nnunet_models import add_nnunet_folder  # noqa: E402
from nnunet_result_builders import DATASET, write_result_folder, zip_results  # noqa: E402
from settings_standin import MemorySettings  # noqa: E402
from slicer_test_helpers import REPO_ROOT  # noqa: E402

TITLE = f"{DATASET} 3d_fullres (nnU-Net)"


@pytest.fixture
def results_root(tmp_path):
    """An ``nnUNet_results`` tree with one result folder (fold 0 and fold 1)."""
    write_result_folder(tmp_path / "nnUNet_results", folds=(0, 1))
    return tmp_path / "nnUNet_results"


def result_folder(results_root):
    return results_root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def test_nnunet_info_reads_classes_from_dataset_json(results_root):
    info = nnunet_info(result_folder(results_root))
    assert info.kind == "nnunet" and not info.has_queries
    assert info.label_names == ("background", "anterior", "posterior")
    assert info.class_names == ("anterior", "posterior")
    assert info.channel_names == ("MRI",) and info.num_channels == 1
    assert info.configuration == "3d_fullres" and info.target_spacing == (1.0, 1.0, 1.0)
    assert info.title == TITLE
    with pytest.raises(MaskMedSlicerError, match="dataset.json is missing"):
        (result_folder(results_root) / "dataset.json").unlink()
        nnunet_info(result_folder(results_root))


def test_reading_an_nnunet_folder_and_its_card_never_imports_torch(results_root):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from MaskMedSlicerLib import MaskMedLogic, ModelList, model_card_info\n"
        "info = MaskMedLogic().model_info(sys.argv[2])\n"
        "card = model_card_info(sys.argv[2])\n"
        "assert info.kind == 'nnunet' and card.kind == 'nnunet', (info, card)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    folder = str(result_folder(results_root))
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "MaskMedSlicer"), folder], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_find_models_finds_result_folders_in_an_nnunet_results_tree(results_root, tmp_path):
    write_result_folder(results_root, dataset="Dataset904_Spleen", trainer="nnUNetTrainer_250epochs")
    hidden = results_root / ".maskmed-install-abc"  # an install in progress
    write_result_folder(hidden, dataset="Dataset905_Half")
    (results_root / "Dataset906_Broken" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0").mkdir(parents=True)
    found = find_models([results_root, result_folder(results_root)])
    assert [m.title for m in found] == [TITLE, "Dataset904_Spleen 3d_fullres (nnU-Net)"]  # each once
    assert all(m.kind == "nnunet" for m in found)


def test_logic_model_info_and_adding_a_folder(results_root):
    logic = MaskMedLogic()
    folder = result_folder(results_root)
    info = logic.model_info(str(folder))
    assert info.kind == "nnunet" and logic.model_info(folder) is info  # cached
    models = ModelList(MemorySettings())
    assert add_nnunet_folder(results_root / DATASET, models) == str(folder)  # the only one inside
    assert models.remembered() == [str(folder)]
    assert resolve_nnunet_folder(results_root) == folder
    write_result_folder(results_root, trainer="nnUNetTrainerNoMirroring")
    with pytest.raises(MaskMedSlicerError, match="holds 2 nnU-Net result folders .*; choose one of them"):
        resolve_nnunet_folder(results_root)
    with pytest.raises(MaskMedSlicerError, match="plans.json is missing"):
        add_nnunet_folder(results_root.parent, ModelList(MemorySettings()))


def test_region_based_folders_are_refused_with_the_field(tmp_path):
    regions = {"background": 0, "whole": [1, 2]}
    write_result_folder(tmp_path, labels=regions, dataset_fields={"regions_class_order": [1]})
    with pytest.raises(MaskMedSlicerError, match="region-based training"):
        add_nnunet_folder(tmp_path / DATASET, ModelList(MemorySettings()))


def test_model_list_labels_and_cards_of_nnunet_folders(results_root):
    models = ModelList(MemorySettings())
    folder = result_folder(results_root)
    models.remember(str(folder))
    entry = models.entries()[-1]
    assert entry.label == TITLE and entry.path == str(folder)
    for needed in (
        "trainer nnUNetTrainer, plans nnUNetPlans, configuration 3d_fullres, folds 0, 1",
        "Classes: anterior, posterior",
        f"Training data licence: {NNUNET_LICENCE_NOT_STATED}",
        "Input: 1 channel(s) (MRI); target spacing 1 × 1 × 1 mm (z × y × x); patch 40×56×40 voxels",
        "no queries",
    ):
        assert needed in entry.tooltip, needed
    summary = models.summary(MaskMedLogic(), str(folder))
    assert summary.channel_names == ("MRI",)
    channels, card = summary.text.split("\n")
    assert channels == "1 channel(s) (MRI); classes: anterior, posterior"
    assert card.startswith(f"Training data licence: {NNUNET_LICENCE_NOT_STATED}. Input: 1 channel(s) (MRI)")
    assert summary.tooltip == entry.tooltip


def test_nnunet_card_reports_the_licence_fields_of_dataset_json(tmp_path):
    fields = {"licence": "CC-BY-SA 4.0", "reference": "Vanderbilt University Medical Center"}
    write_result_folder(tmp_path, dataset_fields=fields)
    card = model_card_info(tmp_path / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    assert card.licence == "CC-BY-SA 4.0; reference: Vanderbilt University Medical Center"
    assert card.training_data == f"{DATASET}, 160 training cases"


def test_cards_of_bundled_models_runs_and_checkpoints(training_run, tmp_path):
    hippocampus = next(e for e in bundled_model_entries() if e.name == "hippocampus")
    card = model_card_info(hippocampus.path)
    assert card.kind == "bundled" and card.classes == ("anterior", "posterior")
    assert card.licence == "CC-BY-SA 4.0" and "bundled with MaskMed as 'hippocampus'" in card.origin
    assert "T1-weighted MRI" in card.input and "Medical Segmentation Decathlon" in card.training_data
    assert "Test Dice: anterior 0." in card.text()

    run, _, _ = training_run
    card = model_card_info(run)
    assert card.kind == "maskmed" and card.origin == f"MaskMed training run {run}"
    assert card.classes == ("liver", "spleen", "kidney_left", "kidney_right", "aorta")
    assert card.training_data == "MaskMedPhantom (the plan's dataset name)"
    assert card.licence == MASKMED_LICENCE_NOT_RECORDED
    assert card.input.startswith("1 channel(s) (CT); target spacing ")
    assert model_card_info(run / "checkpoint_best.pt").classes == card.classes  # the run's plan

    copied = tmp_path / "exported.pt"
    copied.write_bytes((run / "checkpoint_best.pt").read_bytes())
    unread = model_card_info(copied)  # no logic: nothing read from the checkpoint (it needs torch)
    assert unread.classes == () and "when the model is selected" in unread.input
    read = model_card_info(copied, MaskMedLogic())
    assert read.classes == card.classes and read.input == card.input and read.origin == f"MaskMed checkpoint {copied}"


def test_installing_a_zip_remembers_the_model_and_refuses_bad_zips(tmp_path):
    write_result_folder(tmp_path / "export")
    good = zip_results(tmp_path / "export", tmp_path / "model.zip")
    models = ModelList(MemorySettings())
    folder = user_models_folder(tmp_path / "user")
    assert folder == tmp_path / "user" / "MaskMed" / "nnUNet_results"

    with pytest.raises(MaskMedSlicerError, match="SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        install_nnunet_zip_model(good, folder, models, sha256="0" * 64)
    assert not (tmp_path / "user").exists() and models.remembered() == []

    installed = install_nnunet_zip_model(good, folder, models, sha256="")  # "" = no check (the empty dialog)
    assert installed == [str(folder / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres")]
    assert models.remembered() == installed
    assert models.entries()[-1].label == TITLE
    with pytest.raises(MaskMedSlicerError, match="already exists"):
        install_nnunet_zip_model(good, folder, models)
    assert json.loads((folder / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "dataset.json").read_text())
