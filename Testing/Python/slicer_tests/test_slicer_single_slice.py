"""2D images in Slicer: one-slice scalar volumes and RGB(A) vector volumes on real slicer-core MRML.

Slicer loads a grey PNG/JPEG as a scalar volume with one slice and a colour one as a
``vtkMRMLVectorVolumeNode`` (slicer-core has no PNG reader, so the colour volume here is loaded from a
vector NRRD through the same storage node, or built as Slicer builds it). Checked: the node -> channel
images -> file -> node path (arrays, spacing, origin, direction), the label map import on one slice, the
channel checks, and segmentation end to end with real ``maskmed predict`` children: a grey slice with the
session's phantom model, and an RGB volume with a 3-channel model trained here on RGB PNGs, whose result
must equal ``maskmed predict`` on the PNG file itself.
"""

import json

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
    channel_images_from_volume_node,
    export_volume,
    labelmap_to_segmentation,
    nodes_for_model,
    volume_node_from_file,
)
from MaskMedSlicerLib.inputs import check_channels, check_inputs  # noqa: E402
from MaskMedSlicerLib.volume_io import geometry_from_lps, ijk_to_ras, image_from_volume_node  # noqa: E402
from slicer_test_helpers import add_volume, node_count, oblique_ijk_to_ras  # noqa: E402

RGB = ("R", "G", "B")
NAMES = ["background", "disc", "ring"]
SLICE_SHAPE = (40, 48)  # (H, W)


def _rgb(seed=0, shape=(1, 9, 11), components=3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, components)).astype(np.uint8)


def _vector_volume(scene, array: np.ndarray, matrix: np.ndarray, name: str = "photo"):
    """A vtkMRMLVectorVolumeNode from a (D, H, W, C) array, as Slicer makes one from a colour image."""
    from MaskMedSlicerLib.volume_io import set_ijk_to_ras

    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    set_ijk_to_ras(node, matrix)
    return node


def _slicer_png_geometry() -> np.ndarray:
    """IJK-to-RAS of a PNG loaded by Slicer's ITK reader: 1 mm pixels, origin 0, LPS axes."""
    return geometry_from_lps((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


# ---------------------------------------------------------------------------------------------- volumes in/out
def test_one_slice_scalar_volume_round_trips_with_its_geometry(scene, tmp_path):
    array = np.arange(99, dtype=np.int16).reshape(1, 9, 11)
    matrix = oblique_ijk_to_ras(spacing=(0.5, 0.25, 1.0), origin=(3.0, -4.0, 5.0))
    node = add_volume(scene, array, matrix, "x-ray")
    image = image_from_volume_node(node)
    assert image.GetSize() == (11, 9, 1)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.25, 1.0), rtol=1e-12)
    back = volume_node_from_file(export_volume(node, tmp_path / "xray.nii.gz"), scene, "back")
    assert back.GetImageData().GetDimensions() == (11, 9, 1)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array)
    np.testing.assert_allclose(ijk_to_ras(back), matrix, atol=1e-5)


@pytest.mark.parametrize("components", [3, 4])
def test_colour_volume_gives_r_g_b_channel_images_on_its_grid(scene, components):
    array = _rgb(components=components)
    matrix = oblique_ijk_to_ras(spacing=(0.3, 0.4, 1.0))
    node = _vector_volume(scene, array, matrix)
    channels = channel_images_from_volume_node(node)
    assert len(channels) == 3  # RGBA: the alpha channel is dropped
    reference = image_from_volume_node(add_volume(scene, array[..., 0].copy(), matrix, "same grid"))
    for c, image in enumerate(channels):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array[..., c])
        assert image.GetSize() == reference.GetSize() == (11, 9, 1)
        assert image.GetSpacing() == reference.GetSpacing() and image.GetOrigin() == reference.GetOrigin()
        assert image.GetDirection() == reference.GetDirection()


def test_colour_volume_loaded_by_slicers_storage_node(scene, tmp_path):
    array = _rgb(seed=3, shape=(1, 12, 10))
    image = sitk.GetImageFromArray(array, isVector=True)
    image.SetSpacing((0.5, 0.25, 1.0))
    sitk.WriteImage(image, str(tmp_path / "photo.nrrd"))
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "photo.nrrd"))
    assert storage.ReadData(node) == 1
    channels = channel_images_from_volume_node(node)
    assert [sitk.GetArrayFromImage(c).tolist() for c in channels] == [array[..., c].tolist() for c in range(3)]
    assert all(np.allclose(c.GetSpacing(), (0.5, 0.25, 1.0)) for c in channels)


def test_vector_volume_with_other_component_counts_is_refused_by_name(scene):
    two = _vector_volume(scene, _rgb(components=2), np.eye(4), "flow field")
    with pytest.raises(MaskMedSlicerError, match=r"'flow field'.*has 2 components per voxel.*3 \(RGB\) or 4 \(RGBA\)"):
        channel_images_from_volume_node(two)
    with pytest.raises(MaskMedSlicerError, match="'flow field'.*has 2 components per voxel"):
        export_volume(two, "unused.nii.gz")  # the scalar export stays scalar-only


# ---------------------------------------------------------------------------------------------- channels
def test_channel_checks_count_colour_volumes_as_three(scene):
    rgb = _vector_volume(scene, _rgb(), np.eye(4), "photo")
    greys = [add_volume(scene, _rgb()[..., c].copy(), np.eye(4), f"grey {c}") for c in range(3)]
    assert check_inputs([rgb], scene)[0] == [rgb]
    assert check_channels([rgb], RGB, "rgb model") == 3
    assert check_channels(greys, RGB, "rgb model") == 3
    with pytest.raises(MaskMedSlicerError) as info:
        check_channels([rgb], ("MRI",), "grey model")
    assert str(info.value) == (
        "model grey model needs 1 input channel(s) ['MRI'], but the volumes give 3: 'photo' (RGB: 3); give one "
        "colour volume for a model of R, G, B channels, or one grey-value volume per channel"
    )
    with pytest.raises(MaskMedSlicerError, match=r"needs 3 input volume\(s\) \['R', 'G', 'B'\], got 1: \['grey 0'\]"):
        check_channels(greys[:1], RGB, "rgb model")


def test_panel_passes_a_colour_volume_alone_for_a_colour_model(scene):
    rgb = _vector_volume(scene, _rgb(), np.eye(4), "photo")
    grey = add_volume(scene, _rgb()[..., 0].copy(), np.eye(4), "grey")
    assert nodes_for_model([rgb, None, None], 3) == [rgb]
    assert nodes_for_model([rgb, grey, grey], 3) == [rgb]
    assert nodes_for_model([grey, rgb, grey], 3) == [grey, rgb, grey]  # then refused: 1 + 3 + 1 channels
    assert nodes_for_model([rgb, None, None, None], 1) == [rgb]  # then refused by the channel check
    assert nodes_for_model([grey, None, None, None], 1) == [grey]


# ---------------------------------------------------------------------------------------------- label map in
def test_one_slice_label_map_imports_onto_the_volume_and_empty_adds_no_surface(scene):
    matrix = oblique_ijk_to_ras(spacing=(0.5, 0.25, 1.0))
    reference = add_volume(scene, np.zeros((1, 9, 11), np.uint8), matrix, "photo")
    labels = np.zeros((1, 9, 11), np.uint8)
    labels[0, 2:5, 1:4], labels[0, 6:8, 5:10] = 1, 2
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(image_from_volume_node(reference))
    seg = labelmap_to_segmentation(image, reference, NAMES, scene)
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for name in NAMES[1:]:
        ids.InsertNextValue(name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, exported, reference)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), labels)
    np.testing.assert_allclose(ijk_to_ras(exported), matrix, atol=1e-6)
    assert seg.GetSegmentation().ContainsRepresentation("Closed surface")

    empty = sitk.GetImageFromArray(np.zeros_like(labels))
    empty.CopyInformation(image)
    nothing = labelmap_to_segmentation(empty, reference, NAMES, scene, name="nothing found")
    assert nothing.GetSegmentation().GetNumberOfSegments() == 2  # empty segments, one per class
    assert not nothing.GetSegmentation().ContainsRepresentation("Closed surface")


# ---------------------------------------------------------------------------------------------- end to end
def _export_labels(seg_node, reference, scene, names) -> np.ndarray:
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for name in names:
        ids.InsertNextValue(name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap, reference)
    np.testing.assert_allclose(ijk_to_ras(labelmap), ijk_to_ras(reference), atol=1e-4)
    return slicer.util.arrayFromVolume(labelmap).copy()


def test_segment_a_grey_slice_with_the_session_model(scene, training_run, small_phantom, tmp_path):
    run, _, _ = training_run
    phantom = sitk.GetArrayFromImage(sitk.ReadImage(str(small_phantom[0])))
    array = phantom[phantom.shape[0] // 2][None].copy()  # one axial slice: (1, H, W)
    matrix = oblique_ijk_to_ras(spacing=(1.5, 1.5, 1.0), angles=(0.0, 0.0, 0.3))
    node = add_volume(scene, array, matrix, "slice")
    result = MaskMedLogic(temp_root=tmp_path).segment([node], model=run, device="cpu", scene=scene)
    seg = result.segmentation_node
    names = list(result.queries.label_names[1:])
    assert seg.GetSegmentation().GetNumberOfSegments() == len(names)
    labels = _export_labels(seg, node, scene, names)
    assert labels.shape == (1, *array.shape[1:])
    assert list(tmp_path.iterdir()) == [], "temporary folders must be removed"


def _rgb_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) labels: a red disc (1) and a green ring (2) on a noisy grey background."""
    rng = np.random.default_rng(seed)
    H, W = SLICE_SHAPE
    yy, xx = np.mgrid[:H, :W]
    labels = np.zeros((H, W), np.uint8)
    cy, cx = rng.uniform(10, 16), rng.uniform(10, 18)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
    r = np.hypot(yy - rng.uniform(24, 30), xx - rng.uniform(28, 36))
    labels[(r >= 5) & (r <= 8)] = 2
    image = rng.integers(60, 100, size=(H, W, 3)).astype(np.uint8)
    image[labels == 1] = (220, 40, 40)
    image[labels == 2] = (40, 200, 60)
    return image, labels


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    """A 3-channel 2D model trained by the logic's ``maskmed train`` child on 4 RGB PNG cases: the Train panel's
    ``auto`` configuration picks nnU-Net's ``2d`` for single-slice images."""
    root = tmp_path_factory.mktemp("rgb_train")
    raw = root / "raw"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for i in range(4):
        image, labels = _rgb_case(i)
        sitk.WriteImage(sitk.GetImageFromArray(image, isVector=True), str(raw / "imagesTr" / f"case{i}_0000.png"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(raw / "labelsTr" / f"case{i}.png"))
    meta = {"channel_names": dict(enumerate(RGB)), "labels": {n: k for k, n in enumerate(NAMES)}, "file_ending": ".png"}
    (raw / "dataset.json").write_text(json.dumps(meta))
    extra = ["--iterations-per-epoch", "40", "--val-iterations", "1", "--val-every", "2", "--workers", "0"]
    extra += ["--preprocessed", str(root / "prep"), "--seed", "0", "--no-mirroring"]
    process = MaskMedLogic().start_training(
        raw, root / "run", preset="tiny", epochs=2, fold=0, device="cpu", extra=extra
    )
    code = process.wait(timeout=300)
    if code is None:
        process.cancel()
        pytest.fail("maskmed train did not finish within 300 s")
    assert code == 0, process.describe_failure("training")
    return root / "run"


def test_segment_an_rgb_volume_as_maskmed_predict_segments_the_png(scene, rgb_run, tmp_path):
    from MaskMedCore.cli import main
    from MaskMedCore.engine.checkpoint import load_checkpoint

    assert load_checkpoint(rgb_run / "checkpoint_latest.pt").model_config.spatial_dims == 2  # the 2d configuration
    image, truth = _rgb_case(99)
    png = tmp_path / "photo.png"
    sitk.WriteImage(sitk.GetImageFromArray(image, isVector=True), str(png))
    node = _vector_volume(scene, image[None], _slicer_png_geometry(), "photo")  # as Slicer loads photo.png
    before = node_count(scene)
    (tmp_path / "jobs").mkdir()
    result = MaskMedLogic(temp_root=tmp_path / "jobs").segment([node], model=rgb_run, device="cpu", scene=scene)
    assert node_count(scene) > before
    labels = _export_labels(result.segmentation_node, node, scene, NAMES[1:])

    out = tmp_path / "cli"
    argv = ["predict", "-m", str(rgb_run), "-i", str(png), "-o", str(out), "--device", "cpu", "--progress", "none"]
    assert main([*argv, "--save-queries"]) == 0
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "photo.png")))
    assert labels.shape == (1, *SLICE_SHAPE)
    np.testing.assert_array_equal(labels[0], cli)  # the panel and the CLI segment the photo alike ...
    disc, found = truth == 1, labels[0] == 1
    assert 2 * (disc & found).sum() / (disc.sum() + found.sum()) > 0.5  # ... and find the red disc
    assert result.query_maps
    for index, query_map in result.query_maps.items():  # ... down to every query's probabilities
        (path,) = (out / "photo_queries").glob(f"query_{index:02d}_*.tif")
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        np.testing.assert_allclose(query_map.full_array()[0], expected, atol=1 / 510 + 1e-4)  # stored as 1/255
    overlay = MaskMedLogic().show_query(result, next(iter(result.query_maps)), scene=scene)
    assert overlay.GetImageData().GetDimensions()[2] == 1  # query maps stay on the one slice


def test_rgb_volume_for_a_grey_model_adds_nothing(scene, training_run):
    run, _, _ = training_run
    node = _vector_volume(scene, _rgb(), np.eye(4), "photo")
    before = node_count(scene)
    with pytest.raises(MaskMedSlicerError, match=r"needs 1 input channel\(s\) \['CT'\], but the volumes give 3"):
        MaskMedLogic().segment([node], model=run, device="cpu", scene=scene)
    assert node_count(scene) == before
