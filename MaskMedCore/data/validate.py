"""Dataset integrity checks (nnU-Net v2's ``--verify_dataset_integrity``, §2.2), one Problem per defect.

Every case is checked completely, so a user sees all problems at once: files present and readable,
3D (or 2D, read as one slice), as many channels as dataset.json lists (a colour 2D image holds its
channels), channels on one voxel grid, label map on the image grid, lossless and grey-value (no JPEG
or colour label images), label values listed in dataset.json, no NaN/Inf intensities. Multi-task
annotations (:mod:`MaskMedCore.data.multitask_spec`): case labels only for cases of the dataset,
every instance class present in some label map. :func:`read_case` is the raising form used by
fingerprinting and preprocessing: it returns the case's images or raises a DataError naming the
first problem.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from MaskMedCore.data.dataset import RawCase, RawDataset, map_cases
from MaskMedCore.data.image_io import (
    ImageFileError,
    check_finite,
    geometry_differences,
    geometry_of,
    read_image,
    read_image_channels,
    read_label,
)
from MaskMedCore.data.multitask_spec import MultiTaskSpec
from MaskMedCore.errors import DataError

GEOMETRY_RTOL = 1e-3


class Problem(NamedTuple):
    """One defect. ``case_id`` is None for dataset-level problems (dataset.json, stray files)."""

    case_id: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = "dataset" if self.case_id is None else f"case {self.case_id}"
        return f"{where}: {self.message}; fix: {self.fix}"


class CaseCheck(NamedTuple):
    """What :func:`inspect_case` found: the images that could be read (None where not) and the problems."""

    images: list[sitk.Image | None]
    label: sitk.Image | None
    problems: list[Problem]


class DatasetReport(NamedTuple):
    """What :func:`check_dataset` found: problems (the dataset cannot be used as is) and warnings
    (it can, but probably not as the user intends)."""

    problems: list[Problem]
    warnings: list[str]


def validate_dataset(dataset: RawDataset, workers: int = 1) -> list[Problem]:
    """Check every case of ``dataset``; return all problems (empty when the dataset is usable).

    Args:
        dataset: from :func:`MaskMedCore.data.dataset.load_dataset`.
        workers: worker processes reading cases in parallel.

    Returns:
        Dataset-level problems first, then each case's problems in case order.
    """
    return check_dataset(dataset, workers).problems


def check_dataset(dataset: RawDataset, workers: int = 1) -> DatasetReport:
    """:func:`validate_dataset` plus warnings: today, cases stored in different orientations."""
    problems: list[Problem] = _case_label_problems(dataset)
    if dataset.num_training is not None and dataset.num_training != len(dataset.cases):
        problems.append(
            Problem(
                None,
                f"dataset.json numTraining is {dataset.num_training} but {len(dataset.cases)} case(s) were found",
                f"set numTraining to {len(dataset.cases)} or add the missing cases",
            )
        )
    for path in dataset.unmatched_files:
        problems.append(
            Problem(
                None,
                f"{dataset.relative(path)} does not match <case>_XXXX{dataset.file_ending} with a channel index "
                f"0000..{dataset.num_channels - 1:04d}",
                "rename it or move it out of imagesTr/",
            )
        )
    # Do not ship the whole case list (or the case labels) to every task.
    slim = dataclasses.replace(
        dataset, cases=[], multitask=MultiTaskSpec(instance_classes=dataset.multitask.instance_classes)
    )
    case_level: list[Problem] = []
    orientations: dict[str, str] = {}
    values_seen: set[int] = set()
    labels_read = 0
    for case, (case_problems, orientation, values) in zip(
        dataset.cases, map_cases(_case_problems, [(slim, case) for case in dataset.cases], workers)
    ):
        case_level.extend(case_problems)
        if orientation is not None:
            orientations[case.case_id] = orientation
        if values is not None:
            values_seen.update(values)
            labels_read += 1
    if labels_read:
        problems.extend(_missing_instance_problems(dataset, values_seen, labels_read))
    return DatasetReport(problems + case_level, orientation_warnings(orientations))


def _case_problems(item: tuple[RawDataset, RawCase]) -> tuple[list[Problem], str | None, list[int] | None]:
    """The case's problems, orientation and (only when instance classes are declared) label values."""
    dataset, _ = item
    check = inspect_case(*item)
    first = next((image for image in check.images if image is not None), None)
    values = None
    if dataset.multitask.instance_classes and check.label is not None:
        array = sitk.GetArrayViewFromImage(check.label)
        if array.dtype.kind in "iu" or np.isfinite(array).all():
            values = label_values(array)  # a bincount: cheap next to reading the file
    return check.problems, None if first is None else orientation_of(first), values


def _case_label_problems(dataset: RawDataset, listed: int = 5) -> list[Problem]:
    """One problem when dataset.json ``case_labels`` names case ids the dataset does not have."""
    known = {case.case_id for case in dataset.cases}
    unknown = [case for case in dataset.multitask.case_labels if case not in known]
    if not unknown:
        return []
    shown = ", ".join(unknown[:listed]) + (", ..." if len(unknown) > listed else "")
    return [
        Problem(
            None,
            f"dataset.json case_labels.cases has {len(unknown)} case id(s) that are not cases of the dataset: {shown}",
            "fix the ids (a case id is the label file name without its ending) or remove those entries",
        )
    ]


def _missing_instance_problems(dataset: RawDataset, values_seen: set[int], labels_read: int) -> list[Problem]:
    """One problem per instance class that has no voxel in any label map that could be read."""
    return [
        Problem(
            None,
            f"instance class {name!r} (label {dataset.labels[name]}) has no voxel in any of the {labels_read} "
            "label map(s) read",
            "check its value in dataset.json 'labels', or remove it from 'instance_classes'",
        )
        for name in dataset.multitask.instance_classes
        if dataset.labels[name] not in values_seen
    ]


def orientation_of(image: sitk.Image) -> str:
    """The image's axis orientation as DICOM letters (x, y, z axes point to), e.g. ``LPS`` or ``RAS``."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def orientation_warnings(orientations: dict[str, str], listed: int = 3) -> list[str]:
    """One warning when the cases are stored in more than one orientation (case id -> ``LPS`` etc.).

    MaskMed, like nnU-Net, trains and predicts on the stored voxel order: a case stored mirrored
    along an axis is seen mirrored by the network. That is harmless when every case shares one
    orientation and the mirroring augmentation covers the axes, and silently harmful otherwise (the
    abdominal CTs of the benchmark differ by an x/y flip).
    """
    groups: dict[str, list[str]] = {}
    for case_id, code in orientations.items():
        groups.setdefault(code, []).append(case_id)
    if len(groups) < 2:
        return []
    parts = []
    for code, cases in sorted(groups.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(cases[:listed]) + (", ..." if len(cases) > listed else "")
        parts.append(f"{len(cases)} {code} ({shown})")
    return [
        "cases are stored in different orientations: " + "; ".join(parts) + ". MaskMed (like nnU-Net) does not "
        "reorient, so the network sees these cases mirrored relative to each other; reorient them to one "
        "orientation (e.g. SimpleITK DICOMOrient(image, 'LPS')) unless that mirroring is intended"
    ]


def read_case(dataset: RawDataset, case: RawCase) -> tuple[list[sitk.Image], sitk.Image]:
    """The case's C channel images and its label map, all checked.

    Raises:
        DataError: naming the first problem of the case (and how many more there are).
    """
    check = inspect_case(dataset, case)
    if check.problems:
        first = check.problems[0]
        more = len(check.problems) - 1
        tail = f" ({more} more problem(s) in this case; run 'maskmed validate-dataset')" if more else ""
        raise DataError(f"case {case.case_id}: {first.message}; {first.fix}{tail}")
    return check.images, check.label  # type: ignore[return-value]


def inspect_case(dataset: RawDataset, case: RawCase) -> CaseCheck:
    """Read one case and check it; never raises for bad files (they become Problems)."""
    problems: list[Problem] = []
    cid = case.case_id

    def from_error(exc: ImageFileError) -> Problem:
        return Problem(cid, f"{dataset.relative(exc.path)}: {exc.reason}", exc.fix)

    images: list[sitk.Image | None] = []
    image_names: list[str] = []
    if case.packed_channels:
        path = case.image_paths[0]
        try:
            images = list(read_image_channels(path, dataset.num_channels))
        except ImageFileError as exc:
            problems.append(from_error(exc))
            images = [None] * dataset.num_channels
        image_names = [f"{dataset.relative(path)} (channel {c})" for c in range(dataset.num_channels)]
    else:
        for path in case.image_paths:
            try:
                images.append(read_image(path))
            except ImageFileError as exc:
                problems.append(from_error(exc))
                images.append(None)
            image_names.append(dataset.relative(path))

    reference = None
    for image, name, path in zip(images, image_names, _channel_paths(case, dataset.num_channels)):
        if image is None:
            continue
        try:
            check_finite(sitk.GetArrayViewFromImage(image), path)
        except ImageFileError as exc:
            problems.append(Problem(cid, f"{name}: {exc.reason}", exc.fix))
        if reference is None:
            reference = (geometry_of(image), name)
            continue
        diffs = geometry_differences(reference[0], geometry_of(image), GEOMETRY_RTOL)
        if diffs:
            problems.append(
                Problem(
                    cid,
                    f"{name} is not on the voxel grid of {reference[1]}: " + "; ".join(diffs),
                    "resample every channel of a case onto one grid (same size, spacing, origin, direction)",
                )
            )

    label = None
    if case.label_path is None:
        problems.append(Problem(cid, "no label map is listed for this case", "add its 'label' to dataset.json"))
    else:
        label_name = dataset.relative(case.label_path)
        try:
            label = read_label(case.label_path)
        except ImageFileError as exc:
            problems.append(from_error(exc))
        if label is not None:
            problems.extend(_label_problems(dataset, cid, label, label_name, reference))
    return CaseCheck(images, label, problems)


def _channel_paths(case: RawCase, num_channels: int) -> list:
    return [case.image_paths[0]] * num_channels if case.packed_channels else list(case.image_paths)


def _label_problems(
    dataset: RawDataset, cid: str, label: sitk.Image, name: str, reference: tuple | None
) -> list[Problem]:
    problems = []
    if reference is not None:
        diffs = geometry_differences(reference[0], geometry_of(label), GEOMETRY_RTOL)
        if diffs:
            problems.append(
                Problem(
                    cid,
                    f"{name} is not on the voxel grid of image {reference[1]}: " + "; ".join(diffs),
                    "resample the label map onto the image grid (nearest neighbour) or fix its header",
                )
            )
    array = sitk.GetArrayViewFromImage(label)
    if array.dtype.kind in "fc":
        if not np.isfinite(array).all():
            return problems + [Problem(cid, f"{name}: label map has NaN/Inf values", "save integer label values")]
        if not np.array_equal(array, np.round(array)):
            return problems + [
                Problem(cid, f"{name}: label map has non-integer values", "save it with integer label values")
            ]
    allowed = set(dataset.labels.values())
    allowed_text = "{" + ", ".join(map(str, sorted(allowed))) + "}"
    stray = [v for v in label_values(array) if v not in allowed]
    if stray:
        shown = ", ".join(str(v) for v in stray[:20]) + (", ..." if len(stray) > 20 else "")
        problems.append(
            Problem(
                cid,
                f"label value(s) {shown} in {name} not in dataset.json labels {allowed_text}",
                "relabel those voxels, or add the value(s) to dataset.json 'labels'",
            )
        )
    return problems


def label_values(array: np.ndarray) -> list[int]:
    """Sorted distinct integer values of a label array (fast path for small integer ranges)."""
    if array.size == 0:
        return []
    if array.dtype.kind in "iu":
        lo, hi = int(array.min()), int(array.max())
        if hi - lo < (1 << 16):
            flat = array.ravel()
            if lo or flat.dtype == np.uint64:  # bincount needs non-negative values castable to intp
                flat = flat.astype(np.int64) - lo
            counts = np.bincount(flat, minlength=hi - lo + 1)
            return [int(v) + lo for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(array)]
