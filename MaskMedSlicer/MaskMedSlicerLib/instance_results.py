"""Lesions as instances, their boxes and case-level predictions (issue 12): read and check a prediction's files.

For a model with instance classes, a box head or case tasks, ``maskmed predict`` writes beside ``<case><ending>``
(the label map) and ``<case>_summary.json``:

- ``<case>_instances<ending>``: uint16 instance map, 0 = none, value = instance id, the label map's grid;
- in the summary, only when the model predicts them (absent keys: the model has none):

  - ``instances``: ``id`` (1..65535), ``class_name``, ``score`` (0..1) and optionally ``label_value``,
    ``volume_ml``, ``voxel_count`` (both counted in the map when absent) and ``query``;
  - ``boxes``: ``instance`` (an id of ``instances``), ``source`` (``mask`` | ``head``), inclusive voxel indices
    ``index_min`` / ``index_max`` in SimpleITK (x, y, z) = Slicer IJK order, ``center_lps`` (mm) and
    ``size_mm``, the extent along the image axes (the direction matrix's columns);
  - ``case_classification``: ``{task: {"predicted": class, "probabilities": {class: p}}}``.

:func:`read_instance_outputs` checks all of it before the scene is touched: a malformed field raises one
``MaskMedSlicerError`` naming the file, the field, what was found and what was expected. Unknown keys inside
the entries are ignored (a newer producer may add some). :mod:`.instance_views` puts the result into the
scene; :meth:`InstanceOutputs.as_dict` is the plain data for scripts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.volume_io import read_image

BOX_SOURCES = ("mask", "head")
SUMMARY_KEYS = ("instances", "boxes", "case_classification")
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
_MAX_ID = 65535  # uint16 instance map


@dataclass(frozen=True)
class Instance:
    """One predicted instance (``voxel_count`` / ``volume_ml`` counted in the map when the summary lacks them)."""

    id: int
    class_name: str
    score: float
    voxel_count: int
    volume_ml: float
    label_value: int | None = None
    query: int | None = None

    @property
    def segment_id(self) -> str:
        return f"{self.class_name} {self.id}"


@dataclass(frozen=True)
class InstanceBox:
    """A box of an instance: inclusive IJK voxel indices, LPS centre and size (mm) along the image axes."""

    instance: int
    source: str
    index_min: tuple[int, int, int]
    index_max: tuple[int, int, int]
    center_lps: tuple[float, float, float]
    size_mm: tuple[float, float, float]

    @property
    def center_ras(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in RAS_FROM_LPS @ np.asarray(self.center_lps))


@dataclass(frozen=True)
class CaseTask:
    """A case-level prediction: the predicted class of ``task`` and every class's probability."""

    task: str
    predicted: str
    probabilities: dict[str, float]

    @property
    def probability(self) -> float:
        return self.probabilities[self.predicted]


@dataclass(frozen=True)
class InstanceOutputs:
    """The checked instance outputs of one case (see the module docstring).

    Attributes:
        source: the summary file (for messages).
        present: which of :data:`SUMMARY_KEYS` the summary has (empty: a model without them).
        instances: ordered by id.
        boxes: ordered by instance, mask box first.
        case_tasks: in the summary's order.
        instance_map: SimpleITK uint16 image, or None when there are no instances.
    """

    source: str
    present: frozenset[str] = frozenset()
    instances: tuple[Instance, ...] = ()
    boxes: tuple[InstanceBox, ...] = ()
    case_tasks: tuple[CaseTask, ...] = ()
    instance_map: object = None

    def shifted(self, offset) -> InstanceOutputs:
        """Box indices moved by ``offset`` (i, j, k): from an ROI crop's grid to the whole volume's."""
        move = lambda index: tuple(int(v + o) for v, o in zip(index, offset))  # noqa: E731
        boxes = tuple(replace(b, index_min=move(b.index_min), index_max=move(b.index_max)) for b in self.boxes)
        return replace(self, boxes=boxes)

    def as_dict(self) -> dict:
        """Plain data: ``{"instances": [...], "boxes": [...], "case_classification": {...}}`` (empty when absent).

        Each instance also has its ``segment_id``, each box its ``center_ras``, each task the ``probability`` of
        its prediction.
        """
        instances = [{**vars(i), "segment_id": i.segment_id} for i in self.instances]
        boxes = [{k: list(v) if isinstance(v, tuple) else v for k, v in vars(b).items()} for b in self.boxes]
        for box, data in zip(self.boxes, boxes):
            data["center_ras"] = list(box.center_ras)
        tasks = {
            t.task: {"predicted": t.predicted, "probability": t.probability, "probabilities": dict(t.probabilities)}
            for t in self.case_tasks
        }
        return {"instances": instances, "boxes": boxes, "case_classification": tasks}


def read_instance_outputs(
    output_dir: str | os.PathLike, case: str, ending: str, summary: dict, label_image=None
) -> InstanceOutputs:
    """Check a case's instance outputs: the summary's keys and, with instances, the instance map.

    Args:
        output_dir: the prediction folder.
        case: case id (``<case>_summary.json``, ``<case>_instances<ending>``).
        ending: image file ending, e.g. ``.nii.gz``.
        summary: the parsed ``<case>_summary.json``.
        label_image: the predicted label map (SimpleITK); the instance map must share its grid.
            Default: read ``<case><ending>``.

    Returns:
        The outputs; ``present`` is empty for a model without instances, boxes or case tasks.

    Raises:
        MaskMedSlicerError: a malformed field (names the file, the field, what was found and expected), a
            missing or unreadable instance map, one on another grid, or ids in it that the summary lacks.
    """
    out = Path(output_dir)
    source = str(out / f"{case}_summary.json")
    present = frozenset(k for k in SUMMARY_KEYS if k in summary)
    if not present:
        return InstanceOutputs(source)
    if "boxes" in present and "instances" not in present:
        raise MaskMedSlicerError(f"{source}: has 'boxes' but no 'instances'; every box belongs to an instance")
    raw = [_instance(e, f"{source}: instances[{n}]") for n, e in enumerate(_list(summary, "instances", source))]
    ids = [e["id"] for e in raw]
    if len(set(ids)) != len(ids):
        raise MaskMedSlicerError(f"{source}: instances has duplicate ids {sorted(ids)}; each id must be unique")
    boxes = [_box(e, f"{source}: boxes[{n}]", ids) for n, e in enumerate(_list(summary, "boxes", source))]
    pairs = [(b.instance, b.source) for b in boxes]
    if len(set(pairs)) != len(pairs):
        raise MaskMedSlicerError(f"{source}: boxes has more than one box per instance and source: {sorted(pairs)}")
    tasks = summary.get("case_classification", {})
    if not isinstance(tasks, dict):
        raise MaskMedSlicerError(f"{source}: case_classification is {type(tasks).__name__}; expected an object")
    case_tasks = tuple(_case_task(task, e, f"{source}: case_classification[{task!r}]") for task, e in tasks.items())
    instance_map, counts, voxel_ml = None, {}, 0.0
    if raw:
        label_path = out / f"{case}{ending}"
        instance_map = _read_instance_map(out / f"{case}_instances{ending}", label_image, label_path, ids, source)
        counts = _voxel_counts(instance_map)
        voxel_ml = float(np.prod(instance_map.GetSpacing())) / 1000.0
    instances = tuple(
        Instance(
            e["id"], e["class_name"], e["score"],
            e["voxel_count"] if e["voxel_count"] is not None else counts.get(e["id"], 0),
            e["volume_ml"] if e["volume_ml"] is not None else counts.get(e["id"], 0) * voxel_ml,
            e["label_value"], e["query"],
        )
        for e in sorted(raw, key=lambda e: e["id"])
    )  # fmt: skip
    boxes.sort(key=lambda b: (b.instance, BOX_SOURCES.index(b.source)))
    return InstanceOutputs(source, present, instances, tuple(boxes), case_tasks, instance_map)


def _list(summary: dict, key: str, source: str) -> list:
    value = summary.get(key, [])
    if not isinstance(value, list):
        raise MaskMedSlicerError(f"{source}: {key} is {type(value).__name__}; expected a list")
    return value


def _int(value, where: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise MaskMedSlicerError(
            f"{where} is {value!r}; expected an integer" + (f" >= {low}" if low is not None else "")
        )
    if high is not None and value > high:
        raise MaskMedSlicerError(f"{where} is {value!r}; expected an integer <= {high}")
    return value


def _number(value, where: str, low: float | None = None, high: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in {low:g}..{high:g}" if high is not None else (f" >= {low:g}" if low is not None else "")
        raise MaskMedSlicerError(f"{where} is {value!r}; expected a finite number{bounds}")
    return float(value)


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MaskMedSlicerError(f"{where} is {value!r}; expected a non-empty string")
    return value


def _triple(value, where: str, item) -> tuple:
    if not isinstance(value, list) or len(value) != 3:
        raise MaskMedSlicerError(f"{where} is {value!r}; expected a list of 3 (x, y, z) values")
    return tuple(item(v, f"{where}[{a}]") for a, v in enumerate(value))


def _entry(entry, where: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(entry, dict):
        raise MaskMedSlicerError(f"{where} is {entry!r}; expected an object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise MaskMedSlicerError(f"{where} has no {', '.join(missing)} (it has {sorted(entry)})")
    return entry


def _instance(entry, where: str) -> dict:
    _entry(entry, where, ("id", "class_name", "score"))
    optional = {"label_value": 0, "voxel_count": 0, "query": 0}
    checked = {k: None if entry.get(k) is None else _int(entry[k], f"{where}.{k}", low) for k, low in optional.items()}
    volume = entry.get("volume_ml")
    return {
        "id": _int(entry["id"], f"{where}.id", 1, _MAX_ID),
        "class_name": _text(entry["class_name"], f"{where}.class_name"),
        "score": _number(entry["score"], f"{where}.score", 0.0, 1.0),
        "volume_ml": None if volume is None else _number(volume, f"{where}.volume_ml", 0.0),
        **checked,
    }


def _box(entry, where: str, ids: list[int]) -> InstanceBox:
    _entry(entry, where, ("instance", "source", "index_min", "index_max", "center_lps", "size_mm"))
    instance = _int(entry["instance"], f"{where}.instance", 1)
    if instance not in ids:
        raise MaskMedSlicerError(f"{where}.instance is {instance}, but instances has ids {sorted(ids)}")
    if entry["source"] not in BOX_SOURCES:
        raise MaskMedSlicerError(f"{where}.source is {entry['source']!r}; expected one of {list(BOX_SOURCES)}")
    low = _triple(entry["index_min"], f"{where}.index_min", lambda v, w: _int(v, w, 0))
    high = _triple(entry["index_max"], f"{where}.index_max", lambda v, w: _int(v, w, 0))
    if any(a > b for a, b in zip(low, high)):
        raise MaskMedSlicerError(f"{where}: index_min {list(low)} exceeds index_max {list(high)}")
    center = _triple(entry["center_lps"], f"{where}.center_lps", _number)
    size = _triple(entry["size_mm"], f"{where}.size_mm", lambda v, w: _number(v, w, 0.0))
    return InstanceBox(instance, entry["source"], low, high, center, size)


def _case_task(task: str, entry, where: str) -> CaseTask:
    _entry(entry, where, ("predicted", "probabilities"))
    probabilities = entry["probabilities"]
    if not isinstance(probabilities, dict) or not probabilities:
        raise MaskMedSlicerError(
            f"{where}.probabilities is {probabilities!r}; expected an object {{class: probability}} with at least "
            "one class"
        )
    checked = {_text(k, f"{where}.probabilities key"): _number(p, f"{where}.probabilities[{k!r}]", 0.0, 1.0)
               for k, p in probabilities.items()}  # fmt: skip
    predicted = _text(entry["predicted"], f"{where}.predicted")
    if predicted not in checked:
        raise MaskMedSlicerError(f"{where}.predicted is {predicted!r}, which is not in probabilities {sorted(checked)}")
    return CaseTask(_text(task, f"{where} task name"), predicted, checked)


def _read_instance_map(path: Path, label_image, label_path: Path, ids: list[int], source: str):
    import SimpleITK as sitk

    if not path.is_file():
        raise MaskMedSlicerError(f"{source} lists {len(ids)} instance(s) but the instance map {path} does not exist")
    image = read_image(path)
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        raise MaskMedSlicerError(f"instance map {path} has voxel type {array.dtype}; expected integers (uint16)")
    reference = label_image if label_image is not None else read_image(label_path)
    same = image.GetSize() == reference.GetSize() and all(
        np.allclose(getattr(image, g)(), getattr(reference, g)(), atol=1e-4)
        for g in ("GetSpacing", "GetOrigin", "GetDirection")
    )
    if not same:
        raise MaskMedSlicerError(
            f"instance map {path} (size {image.GetSize()}, spacing {image.GetSpacing()}, origin {image.GetOrigin()}) "
            f"is not on the grid of the label map {label_path.name} (size {reference.GetSize()}, spacing "
            f"{reference.GetSpacing()}, origin {reference.GetOrigin()}); both must share one grid"
        )
    unknown = sorted(set(np.unique(array).tolist()) - {0, *ids})
    if unknown:
        raise MaskMedSlicerError(
            f"instance map {path} holds ids {unknown[:10]} that {source} does not list {sorted(ids)}"
        )
    return sitk.Cast(image, sitk.sitkUInt16)


def _voxel_counts(image) -> dict[int, int]:
    import SimpleITK as sitk

    counts = np.bincount(sitk.GetArrayViewFromImage(image).ravel())
    return {int(i): int(c) for i, c in enumerate(counts) if i > 0 and c > 0}
