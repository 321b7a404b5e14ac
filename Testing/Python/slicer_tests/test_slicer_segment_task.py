"""Issue 15, defect 7: the panel and the console segment through one code path, with its input checks.

Before, the module file re-implemented ``start/finish_segmentation`` for the panel without the library's
checks (node type, scene, voxel grid including direction). Now the panel and ``logic.segment`` both use
:class:`SegmentTask`, which calls ``MaskMedLogic.start_segmentation``; ``test_module_file.py`` checks that
the module file has no second path. Nothing here starts a child: every input is refused first.
"""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import MaskMedLogic, MaskMedSlicerError, SegmentTask  # noqa: E402
from MaskMedSlicerLib.inputs import resolve_model  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("label map", "is a vtkMRMLLabelMapVolumeNode, not a scalar volume"),
        ("other direction", "volume 'T2' does not share the voxel grid of volume 'T1'"),
        ("other scene", "volume 'T2' is not in the given scene"),
        ("no volume", "no input volume selected"),
    ],
)
def test_segment_task_refuses_bad_inputs_before_starting(scene, tmp_path, case, message):
    matrix = oblique_ijk_to_ras()
    t1 = add_volume(scene, np.zeros((4, 5, 6), np.int16), matrix, "T1")
    if case == "label map":
        volumes = [add_volume(scene, np.zeros((4, 5, 6), np.uint8), matrix, "labels", label=True)]
    elif case == "other direction":  # same size, spacing and origin; only the axes' directions differ
        flipped = matrix.copy()
        flipped[:3, 0] *= -1
        volumes = [t1, add_volume(scene, np.zeros((4, 5, 6), np.int16), flipped, "T2")]
    elif case == "other scene":
        volumes = [t1, add_volume(slicer.vtkMRMLScene(), np.zeros((4, 5, 6), np.int16), matrix, "T2")]
    else:
        volumes = [None]
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path), scene)
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match=message):
        task.start(volumes, model="phantom")
    assert task.state == "idle" and task.job is None
    assert node_count(scene) == before and list(tmp_path.iterdir()) == []
    task.close()


def test_model_argument_takes_bundled_names():
    from MaskMedCore.bundled_models import BUNDLED_NAMES, bundled_model

    for name in BUNDLED_NAMES:
        model = bundled_model(name)
        if model.available:
            assert resolve_model(name) == model.checkpoint
    with pytest.raises(MaskMedSlicerError, match=r"'no-such-model' is neither .* bundled model name \(phantom, hippo"):
        resolve_model("no-such-model")
    assert MaskMedLogic().model_info("phantom").class_names == (
        "liver",
        "spleen",
        "kidney_left",
        "kidney_right",
        "aorta",
    )
