"""MaskMedLogic end to end on real slicer-core MRML and real ``python -m MaskMedCore`` children."""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import (  # noqa: E402
    MaskMedLogic,
    MaskMedSlicerError,
    SegmentationCancelled,
    volume_node_from_file,
)
from slicer_test_helpers import add_volume, node_count  # noqa: E402

PHANTOM_CLASSES = ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]


def _demo_model() -> Path:
    from MaskMedCore.demo import find_demo_model
    from MaskMedCore.errors import CheckpointError

    try:
        return find_demo_model()
    except CheckpointError as exc:
        pytest.skip(f"bundled demo model not available yet: {exc}")


def _live_processes_mentioning(text: str) -> list[int]:
    """PIDs of running (non-zombie) processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _export_labels(seg_node, reference, scene) -> np.ndarray:
    """Segments in PHANTOM_CLASSES order as label values 1..5 on the reference grid (Slicer's exporter)."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for name in PHANTOM_CLASSES:
        ids.InsertNextValue(name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap, reference)
    return slicer.util.arrayFromVolume(labelmap).copy()


@pytest.fixture(scope="module")
def demo_phantom(tmp_path_factory):
    """The phantom of an unseen seed at half resolution (24 x 48 x 48 voxels of 8 x 6 x 6 mm)."""
    from MaskMedCore.data.phantom import generate_phantom

    folder = tmp_path_factory.mktemp("demo_phantom")
    image, labels = generate_phantom(9001, (24, 48, 48), (8.0, 6.0, 6.0))
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    return folder / "ct.nii.gz", sitk.GetArrayFromImage(labels)


def test_segment_phantom_with_demo_model(scene, demo_phantom, tmp_path):
    model = _demo_model()
    ct_path, reference_labels = demo_phantom
    ct = volume_node_from_file(ct_path, scene, "phantom CT")
    events = []
    logic = MaskMedLogic(temp_root=tmp_path)

    result = logic.segment([ct], model=model, device="cpu", scene=scene, progress=events.append, use_terminology=True)

    seg = result.segmentation_node
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == PHANTOM_CLASSES
    assert segmentation.GetSegment("kidney_left").GetName() == "left kidney"  # use_terminology: Slicer's name
    predicted = _export_labels(seg, ct, scene)
    liver_pred, liver_ref = predicted == 1, reference_labels == 1
    dice = 2 * (liver_pred & liver_ref).sum() / (liver_pred.sum() + liver_ref.sum())
    assert dice > 0.5, f"liver Dice {dice:.3f}"
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is ct

    # progress: the child's events were forwarded, tile fractions rising to 1
    tiles = [e.fraction for e in events if e.kind == "tiles"]
    assert tiles and tiles == sorted(tiles) and tiles[-1] == 1.0
    assert events[-1].fraction == 1.0
    # tables and compact query maps; no temporary file is left (inputs and prediction folder deleted)
    Q = len(result.queries.queries)
    assert result.summary_table.GetNumberOfRows() == Q
    assert result.class_probability_table.GetNumberOfColumns() == 1 + 6 + 1
    assert list(tmp_path.iterdir()) == []
    assert sorted(result.query_maps) == list(range(Q))
    assert all(m.probabilities.dtype == np.uint8 for m in result.query_maps.values())

    # inspect the best liver query: overlay volume + thresholded segment
    liver = max((q for q in result.queries.queries if q["class_name"] == "liver"), key=lambda q: q["score"])
    overlay = logic.show_query(result, liver["index"], threshold=0.5)
    assert overlay.GetScene() is scene and overlay.GetAttribute("MaskMed.QueryIndex") == str(liver["index"])
    query_segment = segmentation.GetSegment(f"query_{liver['index']:02d}")
    assert query_segment is not None and query_segment.GetName().startswith(f"Q{liver['index']} liver")

    before = node_count(scene)
    logic.cleanup(result, remove_nodes_too=True)
    assert result.query_maps == {} and all(t.GetScene() is None for t in result.tables())
    assert node_count(scene) < before and seg.GetScene() is None


def test_cancel_kills_the_child_and_leaves_the_scene_as_it_was(scene, training_run, small_phantom, tmp_path):
    run, _, _ = training_run
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    before = node_count(scene)
    seen = []

    def cancel() -> bool:
        return any(e.kind in ("start", "tiles") for e in seen)

    with pytest.raises(SegmentationCancelled):
        MaskMedLogic(temp_root=tmp_path).segment(
            [ct], model=run, device="cpu", scene=scene, progress=seen.append, cancel=cancel
        )
    assert node_count(scene) == before
    assert list(tmp_path.iterdir()) == [], "temporary folders must be removed"
    deadline = time.monotonic() + 10
    while _live_processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_processes_mentioning(str(tmp_path)) == [], "the predict child survived cancel"


def test_input_checks(scene, training_run):
    run, _, _ = training_run
    a = add_volume(scene, np.zeros((4, 5, 6), np.int16), np.eye(4), "T1")
    b = add_volume(scene, np.zeros((4, 5, 6), np.int16), np.diag([2.0, 1.0, 1.0, 1.0]), "T2")
    logic = MaskMedLogic()
    with pytest.raises(MaskMedSlicerError, match="'T2' does not share the voxel grid of volume 'T1'"):
        logic.segment([a, b], model=run, scene=scene)
    c = add_volume(scene, np.ones((4, 5, 6), np.int16), np.eye(4), "T1 copy")
    with pytest.raises(MaskMedSlicerError, match=r"needs 1 input volume\(s\) \['CT'\], got 2: \['T1', 'T1 copy'\]"):
        logic.segment([a, c], model=run, scene=scene)
    with pytest.raises(MaskMedSlicerError, match="no input volume"):
        logic.segment([], model=run, scene=scene)
    orphan = slicer.vtkMRMLScalarVolumeNode()
    with pytest.raises(MaskMedSlicerError, match="in no scene"):
        logic.segment([orphan], model=run)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a CUDA-less run to make the child fail")
def test_child_failure_raises_with_its_error_line_and_adds_nothing(scene, training_run, small_phantom, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make 'maskmed predict --device cuda' fail")
    run, _, _ = training_run
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match=r"exit code 2\): maskmed predict: error: device is 'cuda'"):
        MaskMedLogic(temp_root=tmp_path).segment([ct], model=run, device="cuda", scene=scene)
    assert node_count(scene) == before and list(tmp_path.iterdir()) == []


def test_start_training_rejects_a_folder_without_dataset_json(tmp_path):
    with pytest.raises(MaskMedSlicerError, match="no dataset.json"):
        MaskMedLogic().start_training(tmp_path, tmp_path / "run", preset="tiny", epochs=1, fold=0, device="cpu")
    assert os.listdir(tmp_path) == []


def test_non_blocking_halves(scene, training_run, small_phantom, tmp_path):
    """start_segmentation returns at once; finish_segmentation refuses a running job, then loads it."""
    run, _, _ = training_run
    ct = volume_node_from_file(small_phantom[0], scene, "CT")
    logic = MaskMedLogic(temp_root=tmp_path)
    before = node_count(scene)
    job = logic.start_segmentation([ct], model=run, device="cpu", scene=scene, save_queries=False)
    assert node_count(scene) == before, "starting must not touch the scene"
    with pytest.raises(MaskMedSlicerError, match="still running"):
        logic.finish_segmentation(job)  # the child needs seconds just to import torch
    assert job.process.wait(timeout=300) == 0
    kinds = [e.kind for e in job.process.events() if e.data.get("stream") != "stderr"]
    assert kinds[0] == "start" and kinds[-1] == "done"

    result = logic.finish_segmentation(job)
    assert result.segmentation_node.GetSegmentation().GetNumberOfSegments() == 5
    assert result.query_maps == {}  # save_queries=False
    with pytest.raises(MaskMedSlicerError, match="save_queries=True"):
        logic.show_query(result, 0)
    assert not job.input_dir.exists() and not job.output_dir.exists()
    logic.cleanup(result, remove_nodes_too=True)
    assert node_count(scene) == before and list(tmp_path.iterdir()) == []
