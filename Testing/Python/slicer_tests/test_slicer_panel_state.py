"""The panel's other state, moved out of the module file into the library: the model list, the dataset
check (``validate-dataset`` child, no torch) and the device probe (child), each tested for real."""

import json
import shutil
import time

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import DatasetCheck, DeviceProbe, MaskMedLogic, ModelList, describe_validation  # noqa: E402
from MaskMedSlicerLib.device_probe import describe_devices  # noqa: E402
from MaskMedSlicerLib.model_list import SETTINGS_KEY  # noqa: E402
from settings_standin import MemorySettings  # noqa: E402


def _finish(task, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while task.running:
        assert time.monotonic() < deadline, task.status
        if task.poll().finished:
            return
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------------- model list
def test_model_list_remembers_and_lists_bundled_models_first(tmp_path):
    settings = MemorySettings()
    models = ModelList(settings)
    run, checkpoint = tmp_path / "run1", tmp_path / "model.pt"
    run.mkdir()
    checkpoint.write_bytes(b"x")
    models.remember(str(run))
    assert settings.value(SETTINGS_KEY) == str(run)  # QSettings returns a one-element list as a string ...
    assert models.remembered() == [str(run)]  # ... which is read as a list
    models.remember(str(checkpoint))
    models.remember(str(run))  # again: moved to the end, not listed twice
    assert models.remembered() == [str(checkpoint), str(run)]
    entries = models.entries(current=str(tmp_path / "gone"))
    bundled = [e for e in entries if e.bundled]
    assert bundled and entries[: len(bundled)] == bundled and "(bundled)" in bundled[0].label
    assert [e.label for e in entries[len(bundled) :]] == ["model.pt (checkpoint)", "run1 (run)"]
    shutil.rmtree(run)
    assert models.remembered() == [str(checkpoint)]  # a model that no longer exists drops out
    models.forget(str(checkpoint))
    assert models.remembered() == []


def test_model_summary(tmp_path):
    models = ModelList(MemorySettings())
    phantom = next(e for e in models.bundled() if "phantom" in e.path)
    summary = models.summary(MaskMedLogic(), phantom.path)
    assert summary.channel_names == ("CT",) and "classes: liver, spleen" in summary.text
    assert phantom.summary in summary.text  # the bundled model's licence line
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    bad = models.summary(MaskMedLogic(), str(tmp_path / "bad.pt"))
    assert bad.num_channels == 1 and bad.text.startswith("Model details not available yet:")


# ------------------------------------------------------------------------------------------- dataset check
def test_describe_validation():
    warning = "warning: cases are stored in different orientations: 2 LPS (a, b); 1 RAS (c). ..."
    assert describe_validation(0, [warning, "dataset X is valid: 3 case(s)"], "") == (
        "dataset X is valid: 3 case(s)",
        [warning],
    )
    status, problems = describe_validation(1, ["case a: bad; fix: this", "1 problem(s) in 1 of 3 case(s)"], "")
    assert problems == ["case a: bad; fix: this"] and status.startswith("1 problem(s)")
    assert describe_validation(2, [], "maskmed: error: no dataset.json") == (
        "Not a usable dataset: maskmed: error: no dataset.json",
        [],
    )


def test_dataset_check_on_real_folders(phantom_dataset, tmp_path):
    check = DatasetCheck()
    check.start(str(phantom_dataset))
    assert check.running and check.status == "Checking the dataset…"
    _finish(check)
    assert check.state == "done" and "is valid: 4 case(s)" in check.status and check.problems == []

    broken = tmp_path / "broken"
    shutil.copytree(phantom_dataset, broken)
    meta = json.loads((broken / "dataset.json").read_text())
    meta["numTraining"] = 5
    (broken / "dataset.json").write_text(json.dumps(meta))
    next((broken / "labelsTr").iterdir()).unlink()
    check.start(str(broken))
    _finish(check)
    assert check.problems and "problem(s)" in check.status

    check.start(str(tmp_path / "empty"))
    _finish(check)
    assert check.status.startswith("Not a usable dataset:") and check.problems == []
    check.start("")
    assert check.state == "idle" and check.status == ""


# -------------------------------------------------------------------------------------------- device probe
def test_describe_devices():
    assert describe_devices('{"torch": "2.5.1", "gpus": []}') == "no CUDA GPU found: auto uses the CPU (PyTorch 2.5.1)"
    assert describe_devices('{"torch": "2.5.1", "gpus": ["H200"]}') == "GPU found: H200 (PyTorch 2.5.1)"
    assert describe_devices('{"error": "No module named torch"}') == "PyTorch cannot be loaded: No module named torch"
    assert describe_devices("garbage").startswith("PyTorch cannot be loaded: garbage")


def test_device_probe_child():
    import torch

    probe = DeviceProbe()
    probe.start()
    _finish(probe)
    assert probe.state == "done" and torch.__version__ in probe.status
