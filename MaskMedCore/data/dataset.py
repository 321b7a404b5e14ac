"""Raw datasets on disk: nnU-Net v2 and Medical Segmentation Decathlon layouts (nnU-Net v2 §2.2).

nnU-Net v2 layout::

    DIR/dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1},
                        "numTraining": N, "file_ending": ".nii.gz"}
    DIR/imagesTr/<case>_0000<ending>, <case>_0001<ending>, ...   (one file per channel)
    DIR/labelsTr/<case><ending>

2D images (PNG, BMP, JPEG, TIFF, DICOM frames; :mod:`MaskMedCore.data.natural_images`) use the nnU-Net
layout with ``file_ending`` e.g. ``".png"``. A colour image is one file, ``<case>_0000.png``, whose RGB
pixels are the channels that dataset.json lists (``{"0": "R", "1": "G", "2": "B"}``); channels may also
be separate grey files. A dataset of JPEG images keeps its label maps as PNG (``labelsTr/<case>.png``).

MSD layout: ``dataset.json`` has ``modality`` {"0": "CT"}, ``labels`` {"0": "background", ...}
(value -> name) and ``training`` [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}];
a multi-modal image is one 4D file whose last axis is the modality. nnU-Net v1 task folders (the
same dataset.json, but images split into ``x_0000.nii.gz``, ...) are read too.

Loading only reads ``dataset.json`` and lists files: a missing or broken case file is not an error
here; :func:`MaskMedCore.data.validate.validate_dataset` reports it with the others.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import SimpleITK as sitk

from MaskMedCore.data.image_io import file_ending as ending_of
from MaskMedCore.data.image_io import read_image, read_image_channels
from MaskMedCore.data.multitask_spec import MultiTaskSpec, read_multitask_spec
from MaskMedCore.data.natural_images import label_endings, packs_channels
from MaskMedCore.errors import DataError

LAYOUTS = ("nnunet", "msd")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class RawCase:
    """One training case.

    Attributes:
        case_id: the case identifier (file name without channel suffix and ending).
        image_paths: one path per channel; for an MSD multi-modal case, one 4D file holding all channels;
            for a colour 2D image, its one file.
        label_path: the label map, or None when the dataset lists none for this case.
        packed_channels: True when ``image_paths[0]`` holds every channel (a 4D MSD image, or the colours
            of a 2D image).
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    packed_channels: bool = False


@dataclass(frozen=True)
class RawDataset:
    """A raw dataset as described by its ``dataset.json``.

    Attributes:
        folder: the dataset folder (absolute).
        name: ``name`` from dataset.json, else the folder name.
        channel_names: one name per input channel, in channel order (C entries).
        labels: label name -> value, exactly 0..K-1 with background 0.
        file_ending: image file ending, e.g. ``.nii.gz``.
        cases: the training cases, sorted by id.
        layout: ``"nnunet"`` or ``"msd"``.
        num_training: ``numTraining`` from dataset.json (None when absent).
        unmatched_files: files in imagesTr/labelsTr with the right ending that fit no case (reported by
            validation).
        multitask: instance classes and case-level labels (``instance_classes``, ``case_labels``; see
            :mod:`MaskMedCore.data.multitask_spec`); empty when dataset.json declares none.
    """

    folder: Path
    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    cases: list[RawCase]
    layout: str = "nnunet"
    num_training: int | None = None
    unmatched_files: tuple[Path, ...] = field(default=())
    multitask: MultiTaskSpec = field(default_factory=MultiTaskSpec)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def case(self, case_id: str) -> RawCase:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DataError(f"case {case_id!r} is not in dataset {self.folder}")

    def read_images(self, case: RawCase) -> list[sitk.Image]:
        """The case's C channel images (no geometry or value checks; see validate.read_case)."""
        return read_case_images(case, self.num_channels)

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset folder when inside it (for messages)."""
        try:
            return str(Path(path).relative_to(self.folder))
        except ValueError:
            return str(path)


def read_case_images(case: RawCase, num_channels: int) -> list[sitk.Image]:
    """Read the C channel images of ``case`` (each 3D)."""
    if case.packed_channels:
        return read_image_channels(case.image_paths[0], num_channels)
    return [read_image(p) for p in case.image_paths]


def load_dataset(folder: str | os.PathLike) -> RawDataset:
    """Read ``dataset.json`` and list the cases of an nnU-Net v2 or MSD dataset folder.

    Raises:
        DataError: the folder or dataset.json is missing, a required field is missing or invalid
            (the message names it; ``instance_classes`` and ``case_labels`` too), or no training case is found.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise DataError(
            f"{meta_path} not found; a dataset folder needs a dataset.json (nnU-Net v2 or Medical "
            "Segmentation Decathlon format) next to imagesTr/ and labelsTr/"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")

    msd = isinstance(meta.get("training"), list) and "channel_names" not in meta
    channel_field = "channel_names" if "channel_names" in meta else "modality"
    channel_names = _parse_channels(meta, channel_field, meta_path)
    labels = _parse_labels(meta, meta_path, value_to_name=msd)
    num_training = meta.get("numTraining")
    if num_training is not None and (isinstance(num_training, bool) or not isinstance(num_training, int)):
        raise DataError(f"{meta_path}: field 'numTraining' must be an integer, got {num_training!r}")
    name = str(meta.get("name") or folder.name)
    multitask = read_multitask_spec(meta, labels, meta_path)

    if msd:
        ending, cases, unmatched = _msd_cases(folder, meta["training"], len(channel_names), meta_path)
    else:
        ending = meta.get("file_ending")
        if not isinstance(ending, str) or not ending.startswith("."):
            raise DataError(
                f"{meta_path}: field 'file_ending' is {ending!r}; expected the image file ending, e.g. \".nii.gz\""
            )
        cases, unmatched = _nnunet_cases(folder, ending, len(channel_names))
    if not cases:
        where = "'training' list" if msd else f"imagesTr/ (files named <case>_0000{ending})"
        raise DataError(f"dataset {folder} is empty: no training case found in {where}")
    return RawDataset(
        folder=folder,
        name=name,
        channel_names=channel_names,
        labels=labels,
        file_ending=ending,
        cases=cases,
        layout="msd" if msd else "nnunet",
        num_training=num_training,
        unmatched_files=tuple(unmatched),
        multitask=multitask,
    )


def _parse_channels(meta: Mapping[str, Any], field_name: str, meta_path: Path) -> tuple[str, ...]:
    raw = meta.get(field_name)
    if not isinstance(raw, dict) or not raw:
        raise DataError(
            f"{meta_path}: field 'channel_names' is missing or empty; expected e.g. "
            '{"0": "CT"} (or "modality" in the MSD format)'
        )
    try:
        keyed = {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        raise DataError(f'{meta_path}: field \'{field_name}\' keys must be channel indices "0", "1", ...') from None
    if sorted(keyed) != list(range(len(keyed))):
        raise DataError(
            f"{meta_path}: field '{field_name}' keys are {sorted(keyed)}; "
            f"expected consecutive indices 0..{len(keyed) - 1}"
        )
    return tuple(keyed[i] for i in range(len(keyed)))


def _parse_labels(meta: Mapping[str, Any], meta_path: Path, value_to_name: bool) -> dict[str, int]:
    raw = meta.get("labels")
    example = '{"0": "background", "1": "spleen"}' if value_to_name else '{"background": 0, "spleen": 1}'
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{meta_path}: field 'labels' is missing or empty; expected e.g. {example}")
    labels: dict[str, int] = {}
    for key, value in raw.items():
        name, number = (value, key) if value_to_name else (key, value)
        if isinstance(number, (list, tuple)):
            raise DataError(
                f"{meta_path}: field 'labels' entry {key!r} is a region {number}; region-based labels are not "
                "supported, give every label one integer value"
            )
        try:
            if isinstance(number, bool) or (isinstance(number, float) and not number.is_integer()):
                raise ValueError
            labels[str(name)] = int(number)
        except (TypeError, ValueError):
            raise DataError(f"{meta_path}: field 'labels' entry {key!r}: {number!r} is not an integer label") from None
    if "ignore" in labels:
        raise DataError(f"{meta_path}: field 'labels' has an 'ignore' label; ignore labels are not supported")
    values = sorted(labels.values())
    if values != list(range(len(values))) or len(values) < 2:
        raise DataError(
            f"{meta_path}: field 'labels' values are {values}; expected consecutive integers 0..K-1 (K >= 2) with "
            "background 0. Renumber the label maps and dataset.json"
        )
    if labels.get("background", 0) != 0:
        raise DataError(f"{meta_path}: field 'labels' gives 'background' the value {labels['background']}; expected 0")
    return dict(sorted(labels.items(), key=lambda kv: kv[1]))


def _nnunet_cases(folder: Path, ending: str, num_channels: int) -> tuple[list[RawCase], list[Path]]:
    """The cases of an nnU-Net folder.

    A case of a 2D-format dataset with several channels whose only image file is ``<case>_0000`` holds
    them as colours (``packed_channels``); reading it checks that it does. Label maps are looked up under
    :func:`~MaskMedCore.data.natural_images.label_endings` (PNG first for a JPEG dataset).
    """
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(f"dataset {folder} has no imagesTr/ folder; nnU-Net layout needs imagesTr/ and labelsTr/")
    channels_found: dict[str, set[int]] = {}
    unmatched: list[Path] = []
    for path in _files_with_ending(images_dir, ending):
        match = _CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        if match and int(match["channel"]) < num_channels:
            channels_found.setdefault(match["case"], set()).add(int(match["channel"]))
        else:
            unmatched.append(path)
    label_files: dict[str, Path] = {}
    for label_ending in reversed(label_endings(ending)):  # the preferred ending is listed last and wins
        for path in _files_with_ending(labels_dir, label_ending):
            label_files[path.name[: -len(label_ending)]] = path
    cases = []
    for cid in sorted(set(channels_found) | set(label_files)):
        packed = num_channels > 1 and packs_channels(ending) and channels_found.get(cid) == {0}
        count = 1 if packed else num_channels
        cases.append(
            RawCase(
                case_id=cid,
                image_paths=tuple(images_dir / f"{cid}_{c:04d}{ending}" for c in range(count)),
                label_path=label_files.get(cid, labels_dir / f"{cid}{label_endings(ending)[0]}"),
                packed_channels=packed,
            )
        )
    return cases, unmatched


def _files_with_ending(directory: Path, ending: str) -> Iterator[Path]:
    if not directory.is_dir():
        return iter(())
    return (p for p in sorted(directory.iterdir()) if p.name.endswith(ending) and not p.name.startswith("."))


def _msd_cases(
    folder: Path, training: list, num_channels: int, meta_path: Path
) -> tuple[str, list[RawCase], list[Path]]:
    cases: list[RawCase] = []
    endings: set[str] = set()
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DataError(f'{meta_path}: field \'training\' entry {i} must be {{"image": path, "label": path}}')
        image = _join(folder, entry["image"])
        label = entry.get("label")
        ending = ending_of(image)
        endings.add(ending)
        case_id = image.name[: -len(ending)] if ending else image.name
        split = [image.parent / f"{case_id}_{c:04d}{ending}" for c in range(num_channels)]
        if not image.exists() and split[0].exists():  # nnU-Net v1 task: the list names <case>, files are <case>_XXXX
            image_paths, packed = tuple(split), False
        else:
            image_paths, packed = (image,), num_channels > 1
        cases.append(
            RawCase(
                case_id=case_id,
                image_paths=image_paths,
                label_path=_join(folder, label) if isinstance(label, str) else None,
                packed_channels=packed,
            )
        )
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"{meta_path}: field 'training' lists case(s) {dupes} more than once")
    ending = sorted(endings)[0] if endings else ".nii.gz"
    return ending, sorted(cases, key=lambda c: c.case_id), []


def _join(folder: Path, relative: str) -> Path:
    """``folder / relative`` with ``./`` and ``..`` removed, symlinks kept (their names are the case ids)."""
    return Path(os.path.normpath(folder / relative))


# ---------------------------------------------------------------------------------------------- workers
T = TypeVar("T")
R = TypeVar("R")


def map_cases(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``map(fn, items)`` in ``workers`` processes (spawned, so no ITK/OpenMP state is forked), in order.

    ``fn`` must be a module-level function and ``items`` picklable. With ``workers <= 1`` it runs here.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
        yield from pool.map(fn, items)
