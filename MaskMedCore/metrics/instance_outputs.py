"""Scored instances, boxes and case predictions of a MaskMed prediction folder, for ``maskmed evaluate``.

``maskmed predict`` with a model that predicts instances writes, beside ``<case><ending>``, the instance
map ``<case>_instances<ending>`` (0 = none, value = instance id) and ``<case>_summary.json`` with
``instances`` (id, class_name, label_value, score, ...), ``boxes`` (per instance a ``mask`` box and, with
a box head, a ``head`` box: inclusive voxel indices in SimpleITK (x, y, z) order) and
``case_classification``. A plain label map (any other tool's output) has none of these: detection then
scores its connected components 1.0, and boxes and case classification are not evaluated.

Box comparison (issue 12: "compared with boxes derived from the predicted masks; report which is better
for small lesions"): each reference lesion (26-connected component) is matched to the predicted
instance of its class with the highest mask IoU (>= ``BOX_MATCH_IOU``, the loosest detection IoU); its
reference box is the component's voxel bounding box, and the 3D IoU of that box with the instance's
mask box and with its head box is recorded with the lesion's volume. The matched lesions at or below
their median volume are the "small" half (a fixed threshold such as 1 cm^3 leaves no small lesion on
datasets whose lesions are all larger, e.g. 4x3x3 mm phantom voxels or the hippocampus).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from MaskMedCore.errors import DataError
from MaskMedCore.metrics.detection import ScoredInstances
from MaskMedCore.metrics.lesions import lesion_components

INSTANCES_SUFFIX = "_instances"
BOX_MATCH_IOU = 0.1
BOX_SOURCES = ("mask", "head")


@dataclass(frozen=True)
class InstanceOutputs:
    """What a prediction folder holds about one case beyond its label map.

    Attributes:
        instance_map: (D, H, W) int32 instance ids, or None when the case has no instance map.
        instances: the summary's ``instances`` entries (id -> entry).
        boxes: ``{source: {instance id: (lo, hi)}}``, lo/hi (3,) inclusive (d, h, w) voxel indices.
        case_classification: the summary's ``case_classification`` ({} when absent).
    """

    instance_map: np.ndarray | None
    instances: Mapping[int, Mapping]
    boxes: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray]]]
    case_classification: Mapping[str, Mapping]

    def scored(self, class_name: str, values: Sequence[int]) -> tuple[ScoredInstances, list[int]] | None:
        """The instances of one class renumbered 1..P with their scores, and the original id of each
        (P entries); None without an instance map."""
        if self.instance_map is None:
            return None
        ids = [
            i
            for i, entry in sorted(self.instances.items())
            if entry.get("class_name") == class_name or entry.get("label_value") in values
        ]
        relabel = np.zeros(int(self.instance_map.max(initial=0)) + 1, dtype=np.int32)
        for new, old in enumerate(ids, start=1):
            if old < relabel.size:
                relabel[old] = new
        scores = np.array([float(self.instances[i]["score"]) for i in ids], dtype=np.float64)
        return ScoredInstances(relabel[self.instance_map], scores), ids


def summary_path(pred_path: Path, ending: str) -> Path:
    return pred_path.with_name(pred_path.name[: -len(ending)] + "_summary.json")


def instance_map_path(pred_path: Path, ending: str) -> Path:
    return pred_path.with_name(pred_path.name[: -len(ending)] + INSTANCES_SUFFIX + ending)


def is_instance_map(name: str, ending: str, names: set[str]) -> bool:
    """True for ``<case>_instances<ending>`` when ``<case><ending>`` is also in ``names``."""
    stem = name[: -len(ending)]
    return stem.endswith(INSTANCES_SUFFIX) and stem[: -len(INSTANCES_SUFFIX)] + ending in names


def read_instance_outputs(pred_path: Path, ending: str, shape: tuple[int, ...]) -> InstanceOutputs:
    """The instance outputs beside the predicted label map ``pred_path`` (empty ones when absent).

    Raises:
        DataError: the summary is not valid JSON or malformed, or the instance map's grid differs.
    """
    import SimpleITK as sitk

    summary_file = summary_path(pred_path, ending)
    summary: dict = {}
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {summary_file}: {exc}") from None
    map_file = instance_map_path(pred_path, ending)
    instance_map = None
    if map_file.is_file() and "instances" in summary:
        instance_map = sitk.GetArrayFromImage(sitk.ReadImage(str(map_file))).astype(np.int32)
        if instance_map.shape != tuple(shape):
            raise DataError(
                f"{map_file} has size {instance_map.shape[::-1]} but {pred_path.name} has {tuple(shape)[::-1]}; "
                "the instance map must share the label map's grid"
            )
    try:
        instances = {int(e["id"]): e for e in summary.get("instances", [])}
        boxes: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {s: {} for s in BOX_SOURCES}
        for box in summary.get("boxes", []):
            lo = np.asarray(box["index_min"], dtype=np.int64)[::-1]  # SimpleITK (x, y, z) -> (d, h, w)
            hi = np.asarray(box["index_max"], dtype=np.int64)[::-1]
            boxes.setdefault(box["source"], {})[int(box["instance"])] = (lo, hi)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{summary_file}: malformed instances/boxes entry ({exc!r})") from None
    return InstanceOutputs(instance_map, instances, boxes, summary.get("case_classification", {}))


def box_iou(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """3D IoU of two inclusive voxel-index boxes (lo, hi), each (3,)."""
    inter = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]) + 1, 0, None).prod()
    vol_a, vol_b = (a[1] - a[0] + 1).prod(), (b[1] - b[0] + 1).prod()
    return float(inter / (vol_a + vol_b - inter))


def box_matches(
    instances: ScoredInstances,
    instance_ids: Sequence[int],
    outputs: InstanceOutputs,
    ref_mask: np.ndarray,
    voxel_mm3: float,
) -> list[dict]:
    """Per reference lesion matched to a predicted instance: its volume and the box IoU of each source.

    Args:
        instances: the class's instances renumbered 1..P (``InstanceOutputs.scored``).
        instance_ids: the original instance id of each renumbered instance (P entries).
        outputs: the case's instance outputs (boxes by original id).
        ref_mask: (D, H, W) reference mask of the class.
        voxel_mm3: volume of one voxel.

    Returns:
        ``[{"volume_mm3", "mask": iou, "head": iou or None}]``, one per matched reference lesion.
    """
    ref_labels, n_ref = lesion_components(ref_mask)
    rows = []
    objects = ndimage.find_objects(ref_labels)
    for g in range(1, n_ref + 1):
        region = objects[g - 1]
        lesion = ref_labels[region] == g
        ids, overlap = np.unique(instances.labels[region][lesion], return_counts=True)
        best, best_iou = 0, 0.0
        for p, inter in zip(ids, overlap, strict=True):
            if p == 0:
                continue
            union = int(lesion.sum()) + int((instances.labels == p).sum()) - int(inter)
            if inter / union > best_iou:
                best, best_iou = int(p), inter / union
        if best == 0 or best_iou < BOX_MATCH_IOU:
            continue
        ref_box = (np.array([s.start for s in region]), np.array([s.stop - 1 for s in region]))
        original = instance_ids[best - 1]
        row = {"volume_mm3": float(lesion.sum() * voxel_mm3)}
        for source in BOX_SOURCES:
            box = outputs.boxes.get(source, {}).get(original)
            row[source] = None if box is None else box_iou(ref_box, box)
        rows.append(row)
    return rows


def summarise_box_matches(rows: Sequence[Mapping]) -> dict:
    """Mean box IoU per source over all matched lesions and over the smaller half (volume <= the median of
    the matched lesions' volumes, ``small_lesion_mm3``); nan where a subset has no box of that source."""
    median = float(np.median([r["volume_mm3"] for r in rows])) if rows else float("nan")
    out = {"small_lesion_mm3": median}
    for source in BOX_SOURCES:
        for subset, keep in (("all", lambda r: True), ("small", lambda r: r["volume_mm3"] <= median)):
            values = [r[source] for r in rows if keep(r) and r[source] is not None]
            out[f"{source}_{subset}"] = float(np.mean(values)) if values else float("nan")
            out[f"n_{source}_{subset}"] = len(values)
    return out
