"""The bundled models in the module's model list, and the bundled real sample case: its Sample Data
registration (offline ``file://`` URIs, checksums) and its loading on real MRML (slicer-core)."""

import ast
import dataclasses
import hashlib
import inspect
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from slicer_test_helpers import REPO_ROOT

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from MaskMedSlicerLib import MaskMedSlicerError  # noqa: E402
from MaskMedSlicerLib.models import bundled_model_entries, bundled_model_entry  # noqa: E402
from MaskMedSlicerLib.sample_data import (  # noqa: E402
    SAMPLE_CATEGORY,
    load_sample_case,
    register_sample_data,
    sample_case,
    sample_cases,
    verify_sample_case,
)
from MaskMedSlicerLib.volume_io import geometry_from_lps, ijk_to_ras  # noqa: E402

HIPPOCAMPUS_DIR = REPO_ROOT / "Resources" / "HippocampusModel"
MODULE_FILE = REPO_ROOT / "MaskMedSlicer" / "MaskMedSlicer.py"


def register_custom_sample_data_source(
    category="Custom",
    sampleName=None,  # noqa: N803 - Slicer's SampleDataLogic.registerCustomSampleDataSource signature
    uris=None,
    fileNames=None,  # noqa: N803
    nodeNames=None,  # noqa: N803
    customDownloader=None,  # noqa: N803
    thumbnailFileName=None,  # noqa: N803
    loadFileType="VolumeFile",  # noqa: N803
    loadFiles=None,  # noqa: N803
    loadFileProperties=None,  # noqa: N803
    checksums=None,
):
    """Stand-in with the parameters of Slicer 5.x ``SampleDataLogic.registerCustomSampleDataSource``."""
    return dict(inspect.getcallargs(register_custom_sample_data_source, **locals()))


# ---------------------------------------------------------------------------------------- model list


def test_model_list_has_both_bundled_models_with_their_cards():
    entries = {e.name: e for e in bundled_model_entries()}
    assert list(entries) == ["phantom", "hippocampus"]  # the demo first, as before
    hippocampus = entries["hippocampus"]
    assert hippocampus.path == HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt" and hippocampus.path.is_file()
    assert hippocampus.class_names == ("anterior", "posterior")
    assert hippocampus.licence == "CC-BY-SA 4.0"
    for needed in ("Licence CC-BY-SA 4.0", "T1-weighted MRI", "1 channel(s) (MRI)", "~1 × 1 × 1 mm"):
        assert needed in hippocampus.summary, needed
    for needed in ("classes: anterior, posterior", "Medical Segmentation Decathlon", "sample case: hippocampus_003"):
        assert needed in hippocampus.description, needed
    assert entries["phantom"].class_names == ("liver", "spleen", "kidney_left", "kidney_right", "aorta")


def test_bundled_entry_is_found_by_path_only_for_bundled_models(tmp_path):
    assert bundled_model_entry(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt").name == "hippocampus"
    assert bundled_model_entry(tmp_path / "mine.pt") is None
    assert bundled_model_entry(tmp_path) is None


def test_bundled_hippocampus_model_reads_as_a_checkpoint():
    from MaskMedSlicerLib import checkpoint_info

    info = checkpoint_info(HIPPOCAMPUS_DIR / "maskmed_hippocampus.pt")
    assert [c.lower() for c in info.class_names] == ["anterior", "posterior"] and info.num_channels == 1


# ------------------------------------------------------------------------------------- Sample Data


def test_sample_case_registration_for_the_sample_data_module():
    calls = []
    names = register_sample_data(lambda **kwargs: calls.append(register_custom_sample_data_source(**kwargs)))
    assert names == ["MaskMedHippocampus003"]
    (call,) = calls
    assert call["category"] == SAMPLE_CATEGORY == "MaskMed"
    assert call["sampleName"] == "MaskMedHippocampus003"
    assert call["loadFileType"] == ["VolumeFile", "SegmentationFile"]
    assert call["nodeNames"] == ["MaskMedHippocampus003", "MaskMedHippocampus003-label"]
    assert len(set(call["fileNames"])) == 2  # one cache folder: the two files need two names
    assert all(len(call[k]) == 2 for k in ("uris", "fileNames", "nodeNames", "loadFileType", "checksums"))
    assert Path(call["thumbnailFileName"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_uris_are_local_and_match_their_checksums(tmp_path):
    """What Sample Data does with them: urllib copies each URI into its cache, then checks the SHA-256."""
    kwargs = sample_case("hippocampus").registration()
    for uri, name, checksum in zip(kwargs["uris"], kwargs["fileNames"], kwargs["checksums"]):
        assert uri.startswith("file:///"), uri  # offline: nothing is downloaded
        urllib.request.urlretrieve(uri, tmp_path / name)
        algo, digest = checksum.split(":")
        assert algo == "SHA256" and hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest


def test_sample_loads_as_a_scalar_volume_with_its_geometry(scene):
    case = sample_case("MaskMedHippocampus003")
    volume, segmentation = load_sample_case(case, scene)
    image = sitk.ReadImage(str(case.image))
    assert volume.IsA("vtkMRMLScalarVolumeNode") and not volume.IsA("vtkMRMLLabelMapVolumeNode")
    assert volume.GetName() == "MaskMedHippocampus003"
    array = slicer.util.arrayFromVolume(volume)
    assert array.shape == (35, 52, 34)  # (D, H, W) of a 34 x 52 x 35 (x, y, z) image
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(image))
    expected = geometry_from_lps(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    np.testing.assert_allclose(ijk_to_ras(volume), expected, atol=1e-6)
    np.testing.assert_allclose(ijk_to_ras(volume)[:3, 3], [1.0, 1.0, 1.0])  # LPS (-1, -1, 1)

    seg = segmentation.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    assert names == ["anterior", "posterior"]
    # voxel for voxel on the image grid: Slicer's own export of the segments equals the manual label file
    reference = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))).astype(int)
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for name in names:
        ids.InsertNextValue(seg.GetSegmentIdBySegmentName(name))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, exported, volume)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), reference)


def test_changed_or_missing_sample_files_are_named(tmp_path, scene):
    case = sample_case("hippocampus_003")
    changed = tmp_path / "hippocampus_003.nii.gz"
    changed.write_bytes(case.image.read_bytes() + b"x")
    with pytest.raises(MaskMedSlicerError, match=r"hippocampus_003.nii.gz has SHA-256 .* model card records"):
        verify_sample_case(dataclasses.replace(case, image=changed))
    with pytest.raises(MaskMedSlicerError, match="does not exist"):
        load_sample_case(dataclasses.replace(case, label=tmp_path / "gone.nii.gz"), scene)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    with pytest.raises(MaskMedSlicerError, match="no bundled sample case 'liver'; available: MaskMedHippocampus003"):
        sample_case("liver")
    assert [c.model_name for c in sample_cases()] == ["hippocampus"]


def test_module_registers_the_sample_data_after_startup():
    """The module file (not importable without Slicer's application) connects the Lib's registration."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "registerSampleData" in functions
    body = ast.unparse(functions["registerSampleData"])
    assert "import SampleData" in body and "register_sample_data(" in body
    assert "SampleData.SampleDataLogic.registerCustomSampleDataSource" in body
    module_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MaskMedSlicer")
    assert "slicer.app.connect('startupCompleted()', registerSampleData)" in ast.unparse(module_class)
