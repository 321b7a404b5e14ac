"""The real sample cases shipped with the bundled models, for Slicer's Sample Data module and the scene.

Slicer's Sample Data module lists data sources that modules register with
``SampleData.SampleDataLogic.registerCustomSampleDataSource`` (SlicerMONAIAuto3DSeg and the scripted
module template do it on ``startupCompleted()``). MaskMed registers each bundled model's held-out case
(today the hippocampus model's ``hippocampus_003``, MSD Task04, CC-BY-SA 4.0) under the category
``MaskMed``. It works offline: the URIs are ``file://`` URIs of the installed files, which Sample Data
copies into its cache with ``urllib`` (it reads ``file://`` as well as ``https://``) and checks against the
SHA-256 checksums recorded in the model card.

Nothing here imports Qt or the SampleData module: :func:`register_sample_data` takes the registration
function, and :func:`load_sample_case` loads a case into any ``vtkMRMLScene`` (slicer-core in tests).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError

SAMPLE_CATEGORY = "MaskMed"


@dataclass(frozen=True)
class SampleCase:
    """A bundled model's held-out case, as Slicer shows and loads it.

    Attributes:
        sample_name: the Sample Data name, e.g. ``MaskMedHippocampus003`` (``SampleData.downloadSample``).
        model_name: the bundled model it belongs to (``maskmed predict -m NAME``).
        case: the case id, e.g. ``hippocampus_003``.
        image, label: the image and its manual label map (installed files).
        image_sha256, label_sha256: their checksums, from the model card.
        class_names: the label map's foreground names by value (1, 2, ...), from the model card.
        thumbnail: the Sample Data button's picture, or None.
        licence: licence and attribution, one line.
    """

    sample_name: str
    model_name: str
    case: str
    image: Path
    label: Path
    image_sha256: str
    label_sha256: str
    class_names: tuple[str, ...]
    thumbnail: Path | None
    licence: str

    @property
    def image_node_name(self) -> str:
        return self.sample_name

    @property
    def label_node_name(self) -> str:
        return f"{self.sample_name}-label"

    def registration(self) -> dict:
        """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``."""
        return {
            "category": SAMPLE_CATEGORY,
            "sampleName": self.sample_name,
            "thumbnailFileName": str(self.thumbnail) if self.thumbnail is not None else None,
            "uris": [self.image.resolve().as_uri(), self.label.resolve().as_uri()],
            # Cache file names must differ: both source files are called <case>.nii.gz.
            "fileNames": [f"{self.sample_name}.nii.gz", f"{self.sample_name}-label.nii.gz"],
            "nodeNames": [self.image_node_name, self.label_node_name],
            "loadFileType": ["VolumeFile", "SegmentationFile"],
            "checksums": [f"SHA256:{self.image_sha256}", f"SHA256:{self.label_sha256}"],
        }


def _sample_name(case: str) -> str:
    """``hippocampus_003`` -> ``MaskMedHippocampus003`` (Slicer's CamelCase sample names)."""
    return "MaskMed" + "".join(part[:1].upper() + part[1:] for part in case.split("_"))


def sample_cases() -> list[SampleCase]:
    """The sample cases of the bundled models whose card names one (files may still be missing).

    Raises:
        MaskMedSlicerError: MaskMedCore cannot be imported.
    """
    try:
        from MaskMedCore.bundled_models import bundled_models
    except ImportError as exc:
        raise MaskMedSlicerError(f"MaskMedCore cannot be imported ({exc}); is the extension installed fully?") from None
    cases = []
    for model in bundled_models(include_missing=True):
        sample = model.card.sample
        if sample is None:
            continue
        thumbnail = sample.image.parent.parent / f"{sample.case}_thumbnail.png"
        cases.append(
            SampleCase(
                sample_name=_sample_name(sample.case),
                model_name=model.name,
                case=sample.case,
                image=sample.image,
                label=sample.label,
                image_sha256=sample.image_sha256,
                label_sha256=sample.label_sha256,
                class_names=model.card.classes,
                thumbnail=thumbnail if thumbnail.is_file() else None,
                licence=f"{model.card.licence}: {model.card.attribution}",
            )
        )
    return cases


def verify_sample_case(case: SampleCase) -> None:
    """Check that the case's files exist and match the card's checksums.

    Raises:
        MaskMedSlicerError: naming the file, what was found and what to do.
    """
    for path, expected in ((case.image, case.image_sha256), (case.label, case.label_sha256)):
        if not path.is_file():
            raise MaskMedSlicerError(f"sample file {path} does not exist; reinstall the MaskMed extension")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise MaskMedSlicerError(
                f"sample file {path} has SHA-256 {digest}, but its model card records {expected}; "
                "restore the file (it must be the unchanged MSD file) or reinstall the MaskMed extension"
            )


def register_sample_data(register: Callable[..., object]) -> list[str]:
    """Register every bundled sample case whose files are present; returns the registered sample names.

    Args:
        register: ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` (or a stand-in in tests),
            called once per case with :meth:`SampleCase.registration`'s keyword arguments.
    """
    names = []
    for case in sample_cases():
        if case.image.is_file() and case.label.is_file():
            register(**case.registration())
            names.append(case.sample_name)
    return names


def load_sample_case(case: SampleCase, scene, verify: bool = True):
    """Load a sample case into ``scene`` without the Sample Data module: the image as a scalar volume and
    the manual labels as a segmentation whose segments are named after the model's classes.

    Args:
        case: from :func:`sample_cases`.
        scene: the ``vtkMRMLScene``.
        verify: check the files' checksums first.

    Returns:
        ``(volume node, segmentation node)``.

    Raises:
        MaskMedSlicerError: missing or changed files, or files that cannot be read.
    """
    from MaskMedSlicerLib.segmentation_io import labelmap_file_to_segmentation
    from MaskMedSlicerLib.volume_io import volume_node_from_file

    if verify:
        verify_sample_case(case)
    volume = volume_node_from_file(case.image, scene, scene.GenerateUniqueName(case.image_node_name))
    label_names = ["background", *case.class_names]
    try:
        with tempfile.TemporaryDirectory(prefix="maskmed-sample-") as folder:
            labels = _integer_label_file(case.label, Path(folder))
            segmentation = labelmap_file_to_segmentation(
                labels, volume, label_names, scene, name=scene.GenerateUniqueName(case.label_node_name)
            )
    except MaskMedSlicerError:
        scene.RemoveNode(volume)
        raise
    return volume, segmentation


def _integer_label_file(path: Path, folder: Path) -> Path:
    """MSD stores some label maps as float32 (0.0, 1.0, 2.0); write an 8-bit copy into ``folder``."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.integer):
        return path
    if not np.array_equal(values, np.rint(values)) or values.min() < 0 or values.max() > 255:
        raise MaskMedSlicerError(f"label map {path} holds values that are not label numbers 0..255")
    out = folder / "labels.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt8), str(out))
    return out


def sample_case(name: str | None = None) -> SampleCase:
    """The sample case called ``name`` (a sample name such as ``MaskMedHippocampus003``, a case id, or a
    bundled model's name); None: the first one.

    Raises:
        MaskMedSlicerError: no such sample (the message lists the available ones).
    """
    cases = sample_cases()
    for case in cases:
        if name is None or name in (case.sample_name, case.case, case.model_name):
            return case
    available = ", ".join(c.sample_name for c in cases) or "none"
    raise MaskMedSlicerError(f"no bundled sample case {name!r}; available: {available}")


def load_demo_phantom(scene, seed: int | None = None):
    """Generate MaskMed's synthetic abdominal CT phantom and load it as a scalar volume.

    Args:
        scene: the ``vtkMRMLScene``.
        seed: phantom seed; None: the demo's (``MaskMedCore.demo.DEMO_SEED``), a case no training used.

    Returns:
        ``(volume node, reference label image)``: the labels are a SimpleITK image (values as in
        ``MaskMedCore.data.phantom.PHANTOM_LABELS``) on the volume's grid.
    """
    from MaskMedCore.data.phantom import generate_phantom
    from MaskMedCore.demo import DEMO_SEED
    from MaskMedSlicerLib.volume_io import update_volume_node_from_image

    image, labels = generate_phantom(DEMO_SEED if seed is None else seed)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName("MaskMed phantom CT"))
    try:
        update_volume_node_from_image(volume, image)
        volume.CreateDefaultDisplayNodes()
    except BaseException:
        scene.RemoveNode(volume)
        raise
    return volume, labels
