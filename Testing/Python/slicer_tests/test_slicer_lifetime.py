"""Issue 15, defect 4: what a run leaves, and when it goes (real MRML, real ``maskmed predict`` children).

Before: every run kept a prediction folder with a full-resolution float32 map per query until "Clear
inspection data"; a new run, closing the scene and module cleanup left the folders and four table nodes
behind. Now query maps are uint8 crops in memory, no temporary file outlives a run, and a new run, the
scene closing and :meth:`SegmentTask.close` clean up.
"""

import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
from MaskMedSlicerLib import MaskMedLogic, QueryResults, compact_query_map, volume_node_from_file  # noqa: E402
from MaskMedSlicerLib.segment_task import SegmentTask  # noqa: E402
from MaskMedSlicerLib.volume_io import ijk_to_ras  # noqa: E402


def _nodes(scene, class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def _live_children(folder: Path) -> list[int]:
    """PIDs of running (non-zombie) processes whose command line mentions ``folder`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_query_maps_are_uint8_crops_that_paste_back(predicted_case, small_phantom, scene):
    out, _, _ = predicted_case
    reference = volume_node_from_file(small_phantom[0], scene, "CT")
    grid, shape = ijk_to_ras(reference), slicer.util.arrayFromVolume(reference).shape
    files = QueryResults.load(out).query_maps
    assert files, "the prediction has no query maps"
    float_bytes = kept_bytes = 0
    for index, path in files.items():
        image = sitk.ReadImage(str(path))
        probabilities = sitk.GetArrayFromImage(image)  # (D, H, W) float32
        compact = compact_query_map(image, grid, shape)
        assert compact.probabilities.dtype == np.uint8
        assert all(c <= s for c, s in zip(compact.probabilities.shape, shape))
        np.testing.assert_allclose(compact.full_array(), np.rint(probabilities * 255) / 255, atol=1e-6, err_msg=index)
        float_bytes, kept_bytes = float_bytes + probabilities.nbytes, kept_bytes + compact.nbytes
        # the crop's geometry is the reference grid's, moved to its first voxel
        k, j, i = compact.offset
        origin = grid @ np.array([i, j, k, 1.0])
        np.testing.assert_allclose(compact.crop_ijk_to_ras()[:, 3], origin, atol=1e-6)
        # a map predicted on an ROI crop of the grid pastes back to the same place
        sub = sitk.RegionOfInterest(image, [20, 30, 10], [10, 8, 5])
        expected = np.zeros(shape, np.float32)
        expected[5:15, 8:38, 10:30] = np.rint(probabilities[5:15, 8:38, 10:30] * 255) / 255
        np.testing.assert_allclose(compact_query_map(sub, grid, shape).full_array(), expected, atol=1e-6)
    assert kept_bytes <= float_bytes / 4, f"kept {kept_bytes} B for {float_bytes} B of float32 maps"


def test_a_run_leaves_no_temporary_file(scene, training_run, small_phantom, tmp_path):
    run, _, _ = training_run
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    result = MaskMedLogic(temp_root=tmp_path).segment([ct], model=run, device="cpu", scene=scene)
    assert list(tmp_path.iterdir()) == [], "a finished run left temporary files"
    assert result.query_maps and all(m.probabilities.dtype == np.uint8 for m in result.query_maps.values())


def test_new_run_scene_close_and_module_cleanup_clean_up(scene, training_run, small_phantom, tmp_path):
    run, _, _ = training_run
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    task = SegmentTask(MaskMedLogic(temp_root=tmp_path), scene)

    first = task.run([ct], model=run, device="cpu")
    overlay, segment_id, chart = task.inspection.show_query(first.queries.queries[0]["index"])
    first_nodes = [*first.tables(), overlay, chart, *task.inspection.nodes()]
    assert len(first.tables()) == 4 and all(n.GetScene() is scene for n in first_nodes)

    # a new run removes the previous run's inspection data (its segmentation stays)
    second = task.run([ct], model=run, device="cpu")
    assert all(n.GetScene() is None for n in first_nodes), "the previous run's inspection nodes were left"
    assert first.segmentation_node.GetScene() is scene and first.query_maps == {}
    assert first.segmentation_node.GetSegmentation().GetSegment(segment_id) is None
    assert len(_nodes(scene, "vtkMRMLTableNode")) == 4 and list(tmp_path.iterdir()) == []

    # closing the scene while a run goes: the child is killed, its files deleted, the result dropped
    task.start([ct], model=run, device="cpu")
    assert list(tmp_path.iterdir()), "a running job has its input and output folders"
    scene.Clear(0)
    assert task.state == "cancelled" and task.result is None and second.query_maps == {}
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10
    while _live_children(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_children(tmp_path) == [], "the predict child survived the scene closing"

    # module cleanup: the result's nodes go, and the scene is no longer observed
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    third = task.run([ct], model=run, device="cpu", save_queries=False)
    task.close()
    assert all(t.GetScene() is None for t in third.tables()) and task.result is None
    task.state = "sentinel"
    scene.Clear(0)
    assert task.state == "sentinel", "a closed task still reacts to scene events"
