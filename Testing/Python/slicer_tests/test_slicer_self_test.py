"""The checks of the module's default self-test (no download, no PyTorch) pass on a real slicer-core scene,
so what ``MaskMedSlicerTest`` runs on the Slicer factory machines is tested here too."""

import subprocess
import sys
import textwrap

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from slicer_test_helpers import REPO_ROOT  # noqa: E402


def test_default_self_test_checks_pass_where_torch_cannot_be_imported():
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # 'import torch' raises ImportError, as in a Slicer without PyTorch
        sys.path.insert(0, {str(REPO_ROOT / "MaskMedSlicer")!r})
        import slicer
        from MaskMedSlicerLib.self_test import check_library_on_scene
        check_library_on_scene(slicer.vtkMRMLScene())
        print("self-test checks passed")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "self-test checks passed" in done.stdout, done.stderr[-2000:]


def test_enabled_self_test_checks_on_a_real_run(scene, tmp_path):
    """What MASKMED_SELF_TEST_SEGMENT=1 adds, on slicer-core: the demo phantom segmented by the bundled model
    through the panel's SegmentTask, checked by ``check_segmentation`` (Dice, query overlay, cleanup)."""
    from MaskMedSlicerLib import MaskMedLogic, SegmentTask
    from MaskMedSlicerLib.sample_data import load_demo_phantom
    from MaskMedSlicerLib.self_test import check_segmentation

    volume, labels = load_demo_phantom(scene)
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path), scene)
    task.run([volume], model="phantom", device="cpu", use_terminology=True)
    dices = check_segmentation(task, labels, 0.8)
    assert len(dices) == 5 and task.result is None and list(tmp_path.iterdir()) == []
    task.close()
