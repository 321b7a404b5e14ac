"""Fixtures for the Slicer-logic tests: real slicer-core MRML scenes, small volumes, and one real
``maskmed train`` + ``maskmed predict`` run shared by the session (tiny phantom, CPU, a few seconds)."""

from __future__ import annotations

import sys

import pytest
from slicer_test_helpers import SMALL_PHANTOM_SHAPE


@pytest.fixture
def scene():
    """A fresh real vtkMRMLScene with the segmentation converter rules registered."""
    import slicer
    from MaskMedSlicerLib import ensure_segmentation_converters

    ensure_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory):
    """A phantom case outside the training seeds: (image path, label path) at SMALL_PHANTOM_SHAPE."""
    import SimpleITK as sitk

    from MaskMedCore.data.phantom import generate_phantom

    folder = tmp_path_factory.mktemp("slicer_phantom")
    image, labels = generate_phantom(77, SMALL_PHANTOM_SHAPE)
    sitk.WriteImage(image, str(folder / "phantom_0000.nii.gz"))
    sitk.WriteImage(labels, str(folder / "phantom_labels.nii.gz"))
    return folder / "phantom_0000.nii.gz", folder / "phantom_labels.nii.gz"


@pytest.fixture(scope="session")
def training_run(tmp_path_factory, phantom_dataset):
    """A real ``maskmed train`` child (1 epoch, 2 iterations, validation), started by the logic.

    Returns ``(run folder, events, return code)``; the run's checkpoint is a barely trained model
    for plumbing tests.
    """
    from MaskMedSlicerLib import MaskMedLogic

    root = tmp_path_factory.mktemp("slicer_train")
    extra = ["--iterations-per-epoch", "2", "--val-iterations", "1", "--val-every", "1", "--workers", "0"]
    extra += ["--patch-size", "16", "32", "32", "--preprocessed", str(root / "prep"), "--seed", "0"]
    process = MaskMedLogic().start_training(
        phantom_dataset, root / "run", preset="tiny", epochs=1, fold=0, device="cpu", extra=extra
    )
    code = process.wait(timeout=300)
    if code is None:
        process.cancel()
        pytest.fail("maskmed train did not finish within 300 s")
    events = process.events()
    assert code == 0, process.describe_failure("training")
    return root / "run", events, code


@pytest.fixture(scope="session")
def predicted_case(tmp_path_factory, training_run, small_phantom):
    """A real ``maskmed predict`` child on the small phantom: ``(output folder, events, return code)``."""
    from MaskMedSlicerLib import MaskMedProcess, build_predict_command, subprocess_env

    out = tmp_path_factory.mktemp("slicer_predict")
    run, _, _ = training_run
    command = build_predict_command(sys.executable, run, [small_phantom[0]], out, device="cpu")
    process = MaskMedProcess(command, subprocess_env()).start()
    code = process.wait(timeout=300)
    assert code == 0, process.describe_failure("prediction")
    return out, process.events(), code
