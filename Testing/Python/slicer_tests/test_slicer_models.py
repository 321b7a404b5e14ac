"""Finding and reading MaskMed checkpoints for the model selector."""

import logging
import shutil

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import MaskMedSlicerError, bundled_demo_model, checkpoint_info, find_models  # noqa: E402

PHANTOM_LABELS = ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")


def test_checkpoint_info_of_a_run_folder(training_run):
    run, _, _ = training_run
    info = checkpoint_info(run)
    assert info.path == run / "checkpoint_best.pt"
    assert info.channel_names == ("CT",) and info.num_channels == 1
    assert info.label_names == PHANTOM_LABELS and info.class_names == PHANTOM_LABELS[1:]
    assert info.dataset_name == "MaskMedPhantom"


def test_find_models_skips_junk(training_run, tmp_path, caplog):
    run, _, _ = training_run
    shutil.copytree(run, tmp_path / "run_a")
    shutil.copy(run / "checkpoint_best.pt", tmp_path / "exported.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "notes").mkdir()
    with caplog.at_level(logging.WARNING):
        models = find_models([tmp_path, tmp_path / "does-not-exist"])
    assert [m.path.name for m in models] == ["exported.pt", "checkpoint_best.pt"]
    assert models[1].path.parent.name == "run_a"
    assert "junk.pt" in caplog.text
    # a run folder given directly counts once
    assert len(find_models([tmp_path / "run_a", tmp_path / "run_a"])) == 1


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"xx")
    with pytest.raises(MaskMedSlicerError, match="broken.pt"):
        checkpoint_info(bad)
    with pytest.raises(MaskMedSlicerError, match="does not exist"):
        checkpoint_info(tmp_path / "missing.pt")


def test_bundled_demo_model_honours_the_override(training_run, monkeypatch, tmp_path):
    run, _, _ = training_run
    monkeypatch.setenv("MASKMED_DEMO_MODEL", str(run / "checkpoint_best.pt"))
    assert bundled_demo_model() == run / "checkpoint_best.pt"
    monkeypatch.setenv("MASKMED_DEMO_MODEL", str(tmp_path / "none.pt"))
    try:
        found = bundled_demo_model()  # falls back to Resources/DemoModel when it ships
    except MaskMedSlicerError as exc:
        assert "demo model was not found" in str(exc)
    else:
        assert found.name == "maskmed_demo_phantom.pt"
