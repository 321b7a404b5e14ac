"""Issue 15, defect 6: training finishes in the library, whether or not a panel is attached.

Before, the panel's timer finished a training run and wrote the new model into the widget's parameter
node, which ``exit()`` (the module hidden) had set to None: AttributeError, and the run was never added
to the model list. :class:`TrainingTask` holds everything it needs; the loops below call ``poll()`` as the
panel's QTimer does, with no panel and no parameter node anywhere. Real ``maskmed train`` children.
"""

import time

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import MaskMedLogic, MaskMedSlicerError, ModelList, TrainingTask  # noqa: E402
from MaskMedSlicerLib.model_list import SETTINGS_KEY  # noqa: E402
from settings_standin import MemorySettings  # noqa: E402


def _extra(training_run) -> list[str]:
    """The fixture run's options, reusing its preprocessed data (no second preprocessing)."""
    run, _, _ = training_run
    extra = ["--iterations-per-epoch", "2", "--val-iterations", "1", "--val-every", "1", "--workers", "0"]
    return [*extra, "--patch-size", "16", "32", "32", "--preprocessed", str(run.parent / "prep"), "--seed", "0"]


def _poll_until(task, condition, timeout: float = 300.0) -> list[str]:
    """Call ``task.poll()`` every 0.2 s (the panel's timer) until ``condition()``; returns the log lines."""
    log, deadline = [], time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out in state {task.state}: {task.status}"
        log += task.poll().log
        time.sleep(0.2)
    return log


def test_training_finishes_and_adds_its_model_without_a_panel(scene, phantom_dataset, training_run, tmp_path):
    settings = MemorySettings()
    task = TrainingTask(MaskMedLogic(), scene, ModelList(settings))
    task.start(
        phantom_dataset, tmp_path / "run", preset="tiny", epochs=1, fold=0, device="cpu", extra=_extra(training_run)
    )
    assert task.state == "running" and task.running

    log = _poll_until(task, lambda: not task.running)

    assert task.state == "done", task.status
    assert task.model_path == str(tmp_path / "run")
    assert settings.values[SETTINGS_KEY] == [str(tmp_path / "run")], "the trained model was not added to the list"
    assert ModelList(settings).remembered() == [str(tmp_path / "run")]
    assert "model was added" in task.status and any("epoch" in line for line in log)
    assert len(task.curve) == 1 and task.table_node.GetTable().GetNumberOfRows() == 1
    assert task.chart_node.GetScene() is scene
    assert task.poll().log == [] and task.state == "done"  # a finished task stays finished


def test_stop_then_kill(scene, phantom_dataset, training_run, tmp_path):
    """First stop asks for a clean stop (resumable checkpoint), the second kills the run."""
    task = TrainingTask(MaskMedLogic(), scene, ModelList(MemorySettings()))
    with pytest.raises(MaskMedSlicerError, match="choose a dataset folder"):
        task.start("", tmp_path / "run")
    task.start(
        phantom_dataset, tmp_path / "run", preset="tiny", epochs=500, fold=0, device="cpu", extra=_extra(training_run)
    )
    with pytest.raises(MaskMedSlicerError, match="already going"):
        task.start(phantom_dataset, tmp_path / "other")
    _poll_until(task, lambda: task.fraction or not task.running)  # the first iteration (or an early end)
    assert task.running, task.status

    task.stop()
    assert task.state == "stopping" and task.running and "Stopping" in task.status
    task.stop()
    _poll_until(task, lambda: not task.running, timeout=30)
    assert task.state in ("cancelled", "done"), task.status  # "done" only if the clean stop won the race
    if task.state == "cancelled":
        assert "killed" in task.status and task.model_path == ""
