"""Lesion metrics of ``maskmed evaluate --lesion-classes``: per case, then over all cases.

Per case and lesion class (``case_lesion_metrics``): the numbers of reference and predicted lesions
(26-connected components), the voxel Dice, the BraTS 2023 lesion-wise Dice (``lesions.lesion_wise_dice``,
with its own counts of merged lesions) and detection TP/FP/FN at each IoU of ``IOU_THRESHOLDS``, every
predicted component scored 1.0 because a label map carries no confidence (``detection``).

Over all cases (``summarise_lesions``): lesion and TP/FP/FN totals, the mean voxel and lesion-wise Dice
over cases, AP at each IoU of ``IOU_THRESHOLDS`` and the FROC sensitivities at ``FROC_FP_PER_CASE`` false
positives per case with IoU >= ``FROC_IOU`` as a hit. With every score 1.0 AP is precision x recall and the
FROC has one operating point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from MaskMedCore.errors import ConfigError
from MaskMedCore.metrics.detection import (
    FROC_FP_PER_CASE,
    CaseDetections,
    ScoredInstances,
    average_precision,
    detection_counts,
    detections_from_instances,
    froc_sensitivities,
)
from MaskMedCore.metrics.lesions import (
    BRATS_DILATION_VOXELS,
    BRATS_MIN_VOLUME_MM3,
    lesion_components,
    lesion_wise_dice,
)
from MaskMedCore.metrics.overlap import dice_score

IOU_THRESHOLDS = (0.1, 0.25, 0.5)
FROC_IOU = 0.1
COUNTS = ("tp", "fp", "fn")
LESION_CSV_COLUMNS = (
    "ref_lesions",
    "pred_lesions",
    "lesion_dice",
    *(f"{c}_iou{t:g}" for t in IOU_THRESHOLDS for c in COUNTS),
    *(f"ap_iou{t:g}" for t in IOU_THRESHOLDS),
)

Classes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class LesionSettings:
    """Which classes get lesion metrics, and the BraTS lesion-wise Dice parameters (picklable for workers).

    Attributes:
        classes: ``{class name: label values}``.
        dilation_voxels: dilation of the lesion-wise Dice, in voxels.
        min_volume_mm3: reference lesions at or below this volume are not scored by the lesion-wise Dice.
    """

    classes: Classes
    dilation_voxels: int = BRATS_DILATION_VOXELS
    min_volume_mm3: float = BRATS_MIN_VOLUME_MM3

    def __post_init__(self) -> None:
        dilation = self.dilation_voxels
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 0:
            raise ConfigError(f"lesion dilation must be an integer number of voxels >= 0, got {dilation!r}")
        volume = self.min_volume_mm3
        if not (isinstance(volume, (int, float)) and math.isfinite(volume) and volume >= 0):
            raise ConfigError(f"minimum lesion volume must be a finite number of mm^3 >= 0, got {volume!r}")


def _key(value: float) -> str:
    """JSON key of a threshold: 0.1 -> "0.1", 1.0 -> "1"."""
    return format(value, "g")


def resolve_lesion_classes(tokens: Sequence[str | int], classes: Mapping[str, tuple[int, ...]] | None) -> Classes:
    """Lesion classes named by class name (from the labels) or by integer label value.

    Args:
        tokens: class names or integer label values, e.g. ``["tumour", "3"]``.
        classes: ``{name: values}`` of the evaluation's labels, or ``None`` (classes are label values).

    Returns:
        ``{name: values}`` in the given order, duplicates dropped. A value names the class of the labels
        with exactly that value; without labels it is a class named by the value.

    Raises:
        ConfigError: a token is background (0), no integer and no class name, or a value no class has.
    """
    resolved: Classes = {}
    for token in tokens:
        text = str(token).strip()
        if classes is not None and text in classes:
            resolved[text] = tuple(classes[text])
            continue
        try:
            value = int(text)
        except ValueError:
            known = f"a class name of the labels ({', '.join(classes)}) or " if classes else ""
            raise ConfigError(f"lesion class {text!r} is unknown; give {known}an integer label value") from None
        if value == 0:
            raise ConfigError("lesion class 0 is the background; give a foreground class")
        if classes is None:
            resolved[str(value)] = (value,)
            continue
        names = [name for name, values in classes.items() if tuple(values) == (value,)]
        if not names:
            listed = ", ".join(f"{n}={list(v)}" for n, v in classes.items())
            raise ConfigError(f"lesion class {value}: no class of the labels has label value {value} ({listed})")
        resolved[names[0]] = (value,)
    return resolved


def case_lesion_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    settings: LesionSettings,
    instances: ScoredInstances | None = None,
) -> tuple[dict, CaseDetections]:
    """Lesion metrics of one class in one case.

    Args:
        pred_mask: (D, H, W) binary prediction of the class.
        ref_mask: (D, H, W) binary reference of the class.
        spacing: voxel spacing (D, H, W) in mm.
        settings: the lesion-wise Dice parameters.
        instances: the model's own scored instances of the class (``maskmed predict`` of an instance model);
            None: the components of ``pred_mask``, each scored 1.0. The lesion-wise Dice always uses the masks.

    Returns:
        (JSON-ready ``{"ref_lesions", "pred_lesions", "voxel_dice", "lesion_dice", "lesion_dice_counts":
        {"ref_lesions", "small_ref_lesions", "tp", "fn", "fp"}, "detection": {iou: {"tp", "fp", "fn"}}}``,
        the case's ``CaseDetections`` for AP and FROC).
    """
    brats = lesion_wise_dice(pred_mask, ref_mask, spacing, settings.dilation_voxels, settings.min_volume_mm3)
    if instances is None:
        pred_labels, n_pred = lesion_components(pred_mask)
        instances = ScoredInstances(pred_labels, np.ones(n_pred))
    n_pred = int(instances.scores.size)
    detections = detections_from_instances(instances, ref_mask)
    metrics = {
        "ref_lesions": detections.n_ref,
        "pred_lesions": n_pred,
        "voxel_dice": dice_score(pred_mask, ref_mask),
        "lesion_dice": brats.dice,
        "lesion_dice_counts": {
            "ref_lesions": brats.n_ref_lesions,
            "small_ref_lesions": brats.n_small_ref_lesions,
            "tp": brats.tp,
            "fn": brats.fn,
            "fp": brats.fp,
        },
        "detection": {_key(t): dict(zip(COUNTS, detection_counts(detections, t))) for t in IOU_THRESHOLDS},
    }
    return metrics, detections


def summarise_lesions(
    settings: LesionSettings, case_metrics: Sequence[Mapping[str, dict]], detections: Mapping[str, list]
) -> dict:
    """Lesion metrics over all cases.

    Args:
        settings: the settings the cases were evaluated with.
        case_metrics: per case, ``{class name: case_lesion_metrics(...)[0]}``.
        detections: ``{class name: [CaseDetections of each case]}``.

    Returns:
        ``{"dilation_voxels", "min_volume_mm3", "iou_thresholds", "froc_iou", "froc_fp_per_case",
        "classes": {name: {"values", "n_cases", "ref_lesions", "pred_lesions", "voxel_dice", "lesion_dice",
        "detection": {iou: {"tp", "fp", "fn", "ap"}}, "froc": {rate: sensitivity}}}}``; the Dices are means
        over cases, the counts totals; AP and sensitivities are nan without reference lesions.
    """
    summary = {}
    for name, values in settings.classes.items():
        rows = [case[name] for case in case_metrics]
        cases = detections[name]
        detection = {}
        for t in IOU_THRESHOLDS:
            counts = {c: sum(r["detection"][_key(t)][c] for r in rows) for c in COUNTS}
            detection[_key(t)] = {**counts, "ap": average_precision(cases, t)}
        froc = froc_sensitivities(cases, FROC_FP_PER_CASE, FROC_IOU)
        summary[name] = {
            "values": list(values),
            "n_cases": len(rows),
            "ref_lesions": sum(r["ref_lesions"] for r in rows),
            "pred_lesions": sum(r["pred_lesions"] for r in rows),
            "voxel_dice": float(np.mean([r["voxel_dice"] for r in rows])) if rows else float("nan"),
            "lesion_dice": float(np.mean([r["lesion_dice"] for r in rows])) if rows else float("nan"),
            "detection": detection,
            "froc": {_key(rate): sensitivity for rate, sensitivity in froc.items()},
        }
    return {
        "dilation_voxels": settings.dilation_voxels,
        "min_volume_mm3": float(settings.min_volume_mm3),
        "iou_thresholds": list(IOU_THRESHOLDS),
        "froc_iou": FROC_IOU,
        "froc_fp_per_case": list(FROC_FP_PER_CASE),
        "classes": summary,
    }


def lesion_csv_cells(entry: Mapping | None) -> list:
    """Values for ``LESION_CSV_COLUMNS`` of one CSV row: a case entry, a class summary, or None (empty).

    A case entry has no AP (empty cells); a summary has totals of the counts and the mean lesion Dice.
    """
    if entry is None:
        return [None] * len(LESION_CSV_COLUMNS)
    detection = entry["detection"]
    counts = [detection[_key(t)][c] for t in IOU_THRESHOLDS for c in COUNTS]
    ap = [detection[_key(t)].get("ap") for t in IOU_THRESHOLDS]
    return [entry["ref_lesions"], entry["pred_lesions"], entry["lesion_dice"], *counts, *ap]
