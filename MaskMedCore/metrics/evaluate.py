"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are matched by their exact file name (``case_001.nii.gz`` in both folders); every file with a
volume ending in ``IMAGE_ENDINGS`` takes part, anything else (JSON, CSV, npz, pkl) is ignored.
Each pair must share its grid (size, spacing, origin, direction). Per case and per foreground class
the Dice, HD95 and normalised surface Dice are computed (definitions and empty cases: see
``MaskMedCore.metrics``); per-class means average over cases (HD95: over the cases where it is
defined), and the overall means average the per-class means over the foreground classes.

Classes are either given as ``{name: value}`` (a region is ``{name: [value, ...]}``, the union of
those label values, as in nnU-Net's region-based dataset.json) or, by default, are every non-zero
value found in either folder, named by the value. Value 0 is background and is never scored.

With ``lesion_classes`` the chosen classes also get lesion metrics (lesion counts, BraTS 2023 lesion-wise
Dice, detection TP/FP/FN, AP and FROC; see ``MaskMedCore.metrics.lesion_evaluation``); without it the
result is exactly what it was before those existed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_text
from MaskMedCore.metrics.case_evaluation import case_classification_metrics
from MaskMedCore.metrics.instance_outputs import (
    box_matches,
    is_instance_map,
    read_instance_outputs,
    summarise_box_matches,
)
from MaskMedCore.metrics.lesion_evaluation import (
    LESION_CSV_COLUMNS,
    LesionSettings,
    case_lesion_metrics,
    lesion_csv_cells,
    resolve_lesion_classes,
    summarise_lesions,
)
from MaskMedCore.metrics.lesions import BRATS_DILATION_VOXELS, BRATS_MIN_VOLUME_MM3
from MaskMedCore.metrics.overlap import class_mask, dice_score
from MaskMedCore.metrics.surface import surface_metrics

IMAGE_ENDINGS = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz", ".vtk", ".mnc", ".tif", ".tiff",
    ".png", ".bmp",
)  # fmt: skip
"""Label-map endings evaluated (2D label images too: PNG, BMP, TIFF; JPEG is lossy and never a label map)."""
METRIC_NAMES = ("dice", "hd95", "nsd")
CSV_COLUMNS = ("case", "class", "dice", "hd95", "nsd", "pred_voxels", "ref_voxels", "n_hd95_undefined")

Classes = dict[str, tuple[int, ...]]


def read_dataset_labels(path: str | os.PathLike) -> dict[str, int | tuple[int, ...]]:
    """Class names and label values from an nnU-Net or Medical Segmentation Decathlon dataset.json.

    nnU-Net v2 writes ``"labels": {"background": 0, "liver": 1, "tumour": [1, 2]}`` (name -> value
    or region); the MSD writes ``"labels": {"0": "background", "1": "liver"}`` (value -> name).

    Args:
        path: the dataset.json file.

    Returns:
        ``{name: value}``, with a tuple of values for regions; background included.

    Raises:
        DataError: the file is missing, is not JSON, or has no usable ``labels`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file {path} does not exist")
    try:
        labels = json.loads(path.read_text()).get("labels")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise DataError(f"{path} is not a JSON object with a 'labels' field: {exc}") from None
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path} has no 'labels' mapping (nnU-Net name->value or MSD value->name)")
    msd = all(isinstance(k, str) and k.strip().lstrip("-").isdigit() for k in labels) and all(
        isinstance(v, str) for v in labels.values()
    )
    if msd:
        return {name: int(value) for value, name in labels.items()}
    out: dict[str, int | tuple[int, ...]] = {}
    for name, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            out[name] = tuple(value)
        else:
            raise DataError(
                f"label {name!r} in {path} has value {value!r}; expected an integer or a list of integers "
                "(nnU-Net) or a value->name mapping (MSD)"
            )
    return out


def _normalise_classes(labels: Mapping[str, int | Sequence[int]]) -> Classes:
    """``{name: value or values}`` -> ``{name: values}`` with background (value 0 alone) dropped."""
    classes: Classes = {}
    for name, value in labels.items():
        values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
        if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"labels[{name!r}] = {value!r}; expected an integer label value or a list of them")
        values = tuple(int(v) for v in values)
        if values == (0,):
            continue
        if 0 in values:
            raise ConfigError(f"labels[{name!r}] = {value!r} includes background value 0 in a region")
        classes[str(name)] = values
    return classes


def _list_label_maps(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} does not exist")
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_ENDINGS)
    }


def _read_label_map(path: Path):
    """(label map as an integer (D, H, W) array, SimpleITK image for its geometry)."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise DataError(f"cannot read {path}: {first}") from None
    if image.GetNumberOfComponentsPerPixel() != 1 and image.GetDimension() == 2:
        # SimpleITK stores a grey BMP with a palette and reads it back as RGB; read_label takes the palette
        # indices (and refuses real colour images with the fix). The 2D image keeps its own geometry.
        from MaskMedCore.data.image_io import read_label  # its errors are DataErrors naming the file and fix

        flat = sitk.GetImageFromArray(sitk.GetArrayFromImage(read_label(path))[0])
        flat.CopyInformation(image)
        image = flat
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a label map"
        )
    array = sitk.GetArrayViewFromImage(image)  # (D, H, W): SimpleITK's (x, y, z) reversed
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(f"{path} has non-integer voxel values ({array.dtype}); expected a label map")
        array = array.astype(np.int32)
    return np.array(array, copy=True), image


def _check_same_grid(pred_path: Path, pred_img, ref_path: Path, ref_img) -> None:
    checks = (
        ("size", pred_img.GetSize(), ref_img.GetSize(), 0.0),
        ("spacing", pred_img.GetSpacing(), ref_img.GetSpacing(), 1e-4),
        ("origin", pred_img.GetOrigin(), ref_img.GetOrigin(), 1e-3),
        ("direction", pred_img.GetDirection(), ref_img.GetDirection(), 1e-4),
    )
    for field, got, want, tol in checks:
        if len(got) != len(want) or not np.allclose(got, want, rtol=0.0, atol=tol):
            got_s = tuple(round(v, 6) for v in got)
            want_s = tuple(round(v, 6) for v in want)
            raise DataError(
                f"{field} of prediction {pred_path} is {got_s} but reference {ref_path} has {want_s}; "
                "resample the prediction onto the reference grid"
            )


def _present_values(label_map: np.ndarray) -> set[int]:
    if label_map.size and label_map.dtype != np.uint64 and label_map.min() >= 0 and label_map.max() < 65536:
        return {int(v) for v in np.flatnonzero(np.bincount(label_map.ravel()))}  # much faster than np.unique
    return {int(v) for v in np.unique(label_map)}


def _ending(name: str) -> str:
    return next(e for e in IMAGE_ENDINGS if name.lower().endswith(e))


def _evaluate_case(
    pred_path: Path, ref_path: Path, classes: Classes | None, tolerance_mm: float, lesions: LesionSettings | None = None
) -> dict:
    """Metrics of one case; with ``classes=None`` every non-zero value present is a class.

    With ``lesions`` the case also has ``"lesions"`` (JSON-ready), ``"lesion_detections"``
    (``{name: CaseDetections}``, picklable, popped by ``evaluate_folders`` for AP and FROC) and
    ``"box_matches"`` (``{name: [...]}``, popped too). When the prediction folder holds the model's
    instance outputs (``metrics/instance_outputs.py``) its scored instances are the detections. Every case
    has ``"case_classification"`` (the summary's, {} without one; popped).
    """
    pred, pred_img = _read_label_map(pred_path)
    ref, ref_img = _read_label_map(ref_path)
    _check_same_grid(pred_path, pred_img, ref_path, ref_img)
    spacing = tuple(float(s) for s in reversed(ref_img.GetSpacing()))  # (D, H, W) in mm
    present = (_present_values(pred) | _present_values(ref)) - {0}
    if classes is None:
        classes = {str(v): (v,) for v in sorted(present)}
    metrics = {}
    for name, values in classes.items():
        pred_mask = class_mask(pred, values[0] if len(values) == 1 else values)
        ref_mask = class_mask(ref, values[0] if len(values) == 1 else values)
        surface = surface_metrics(pred_mask, ref_mask, spacing, tolerance_mm=tolerance_mm)
        metrics[name] = {
            "dice": dice_score(pred_mask, ref_mask),
            "hd95": surface.hd95,
            "nsd": surface.nsd,
            "pred_voxels": int(np.count_nonzero(pred_mask)),
            "ref_voxels": int(np.count_nonzero(ref_mask)),
        }
    case = {"case": ref_path.name, "spacing": list(spacing), "metrics": metrics, "present_values": sorted(present)}
    outputs = read_instance_outputs(pred_path, _ending(pred_path.name), pred.shape)
    case["case_classification"] = dict(outputs.case_classification)
    if lesions is not None:
        case["lesions"], case["lesion_detections"], case["box_matches"] = {}, {}, {}
        for name, values in lesions.classes.items():
            pred_mask = class_mask(pred, values[0] if len(values) == 1 else values)
            ref_mask = class_mask(ref, values[0] if len(values) == 1 else values)
            scored = outputs.scored(name, values)
            case["lesions"][name], case["lesion_detections"][name] = case_lesion_metrics(
                pred_mask, ref_mask, spacing, lesions, None if scored is None else scored[0]
            )
            case["box_matches"][name] = (
                [] if scored is None else box_matches(*scored, outputs, ref_mask, float(np.prod(spacing)))
            )
    return case


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    labels: Mapping[str, int | Sequence[int]] | None = None,
    tolerance_mm: float = 2.0,
    workers: int = 1,
    lesion_classes: Sequence[str | int] | None = None,
    lesion_dilation: int = BRATS_DILATION_VOXELS,
    min_lesion_volume_mm3: float = BRATS_MIN_VOLUME_MM3,
    case_labels: tuple[Sequence[tuple[str, Sequence[str]]], Mapping[str, Mapping[str, str]]] | None = None,
) -> dict:
    """Dice, HD95 and NSD of every predicted label map against its reference, per case and class.

    Args:
        pred_dir: folder of predicted label maps.
        ref_dir: folder of reference label maps with the same file names.
        labels: ``{class name: label value}`` or ``{name: [values]}`` for regions (see
            ``read_dataset_labels``); background (value 0) is skipped. ``None``: every non-zero value
            found in either folder, named ``"1"``, ``"2"``, ... Values in the files that belong to no
            class are left out and listed in ``ignored_values``.
        tolerance_mm: NSD tolerance in mm.
        workers: cases evaluated in parallel processes (1: in this process).
        lesion_classes: class names of ``labels`` or integer label values that also get lesion metrics
            (``MaskMedCore.metrics.lesion_evaluation``); ``None``: none, and no ``"lesions"`` keys.
            Without ``labels`` a value present in no file is still scored (as a class empty everywhere).
        lesion_dilation: dilation in voxels of the BraTS 2023 lesion-wise Dice (default 3, BraTS-GLI).
        min_lesion_volume_mm3: reference lesions of at most this volume are not scored by the
            lesion-wise Dice (default 50 mm^3, BraTS-GLI).
        case_labels: ``(tasks, truth)``: the dataset's case-level tasks ``((task, (class, ...)), ...)`` and
            labels ``{case id: {task: class}}``; the result then has ``"case_classification"``
            (``metrics/case_evaluation.py``) from the predictions' ``<case>_summary.json``.

    Returns:
        A JSON-ready dict (floats are plain; undefined values are ``nan``)::

            {"pred_dir", "ref_dir", "tolerance_mm", "n_cases",
             "classes": {name: [values]}, "ignored_values": [values],
             "cases": [{"case": file name, "spacing": [D, H, W] mm,
                        "metrics": {name: {"dice", "hd95", "nsd", "pred_voxels", "ref_voxels"}}}],
             "per_class": {name: {"dice", "hd95", "nsd", "n_cases", "n_hd95_undefined"}},
             "mean": {"dice", "hd95", "nsd"}}   # over foreground classes

        With ``lesion_classes`` each case also has ``"lesions": {name: case_lesion_metrics(...)[0]}`` and
        the result ``"lesions": summarise_lesions(...)``, whose classes gain ``"boxes"`` (box IoU of mask
        and head boxes, ``metrics/instance_outputs.py``) when the predictions hold instance outputs.

    Raises:
        DataError: a folder is missing or empty, a file has no counterpart, cannot be read, is not a
            label map, or its grid differs from its counterpart's.
        ConfigError: bad ``labels``, ``tolerance_mm``, ``workers``, ``lesion_classes`` or lesion settings.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ConfigError(f"tolerance_mm must be a finite number of mm >= 0, got {tolerance_mm!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    classes = _normalise_classes(labels) if labels is not None else None
    lesions = None
    if lesion_classes is not None:
        lesions = LesionSettings(
            resolve_lesion_classes(lesion_classes, classes), lesion_dilation, min_lesion_volume_mm3
        )

    preds = _list_label_maps(pred_dir, "prediction")
    # The instance maps maskmed predict writes beside the label maps are read with them, not scored as cases.
    preds = {n: p for n, p in preds.items() if not is_instance_map(n, _ending(n), set(preds))}
    refs = _list_label_maps(ref_dir, "reference")
    if not refs:
        raise DataError(f"no label maps ({', '.join(IMAGE_ENDINGS)}) found in reference folder {ref_dir}")
    missing = sorted(set(refs) - set(preds))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"prediction {pred_dir / missing[0]}{more} missing for reference {refs[missing[0]]}")
    extra = sorted(set(preds) - set(refs))
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise DataError(f"reference {ref_dir / extra[0]}{more} missing for prediction {preds[extra[0]]}")

    names = sorted(refs)
    jobs = [(preds[n], refs[n], classes, float(tolerance_mm), lesions) for n in names]
    if workers == 1 or len(jobs) == 1:
        cases = [_evaluate_case(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            cases = list(pool.map(_evaluate_case, *zip(*jobs)))

    present = set().union(*(set(c.pop("present_values")) for c in cases))
    if classes is None:
        lesion_values = {values[0] for values in lesions.classes.values()} if lesions else set()
        classes = {str(v): (v,) for v in sorted(present | lesion_values)}
        for case in cases:  # a value absent from both files of a case: both masks empty
            case["metrics"] = {
                n: case["metrics"].get(n, {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "pred_voxels": 0, "ref_voxels": 0})
                for n in classes
            }
    covered = {v for values in classes.values() for v in values}
    lesion_summary = None
    if lesions is not None:
        detections = {name: [c["lesion_detections"][name] for c in cases] for name in lesions.classes}
        boxes = {name: [row for c in cases for row in c["box_matches"][name]] for name in lesions.classes}
        for case in cases:
            del case["lesion_detections"], case["box_matches"]  # not JSON; only the summary needs them
        lesion_summary = summarise_lesions(lesions, [c["lesions"] for c in cases], detections)
        for name, rows in boxes.items():
            if rows:
                lesion_summary["classes"][name]["boxes"] = summarise_box_matches(rows)
    predicted_cases = {_case_id(c["case"]): c.pop("case_classification") for c in cases}
    classification = None
    if case_labels is not None:
        tasks, truth = case_labels
        classification = case_classification_metrics(tasks, truth, predicted_cases)

    per_class = {}
    for name in classes:
        rows = [c["metrics"][name] for c in cases]
        per_class[name] = {
            "dice": _mean([r["dice"] for r in rows]),
            "hd95": _mean([r["hd95"] for r in rows]),
            "nsd": _mean([r["nsd"] for r in rows]),
            "n_cases": len(rows),
            "n_hd95_undefined": sum(math.isnan(r["hd95"]) for r in rows),
        }
    result = {
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "tolerance_mm": float(tolerance_mm),
        "n_cases": len(cases),
        "classes": {name: list(values) for name, values in classes.items()},
        "ignored_values": sorted(present - covered),
        "cases": cases,
        "per_class": per_class,
        "mean": {m: _mean([pc[m] for pc in per_class.values()]) for m in METRIC_NAMES},
    }
    if lesion_summary is not None:
        result["lesions"] = lesion_summary
    if classification is not None:
        result["case_classification"] = classification
    return result


def _case_id(file_name: str) -> str:
    return file_name[: -len(_ending(file_name))]


def _json_ready(obj):
    """nan/inf -> None (null) so the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def _csv_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, ".10g") if isinstance(value, float) else str(value)


def write_report(result: dict, out_json: str | os.PathLike, out_csv: str | os.PathLike) -> tuple[Path, Path]:
    """Write an ``evaluate_folders`` result as JSON and CSV, each atomically.

    The JSON is the result with nan written as ``null``. The CSV has one row per case and class
    (columns ``CSV_COLUMNS``), then one row per class with case ``mean``, then the overall row
    (case ``mean``, class ``foreground_mean``); undefined values are empty cells. A result with
    ``"lesions"`` has the extra columns ``LESION_CSV_COLUMNS``, filled for the lesion classes: per case
    its counts and lesion-wise Dice; in the class's ``mean`` row the count totals, the mean lesion-wise
    Dice and the AP at each IoU (FROC is in the JSON only).

    Returns:
        The two paths written.

    Raises:
        MaskMedError: a file cannot be written (its folder must exist).
    """
    json_path = atomic_write_text(out_json, json.dumps(_json_ready(result), indent=2, allow_nan=False) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    lesions = result.get("lesions")

    def lesion_cells(entry) -> list[str]:  # no extra cells at all without lesion metrics
        return [_csv_number(v) for v in lesion_csv_cells(entry)] if lesions else []

    writer.writerow(CSV_COLUMNS + (LESION_CSV_COLUMNS if lesions else ()))
    for case in result["cases"]:
        for name, m in case["metrics"].items():
            writer.writerow(
                [
                    case["case"],
                    name,
                    *(_csv_number(m[k]) for k in CSV_COLUMNS[2:7]),
                    "",
                    *lesion_cells(case.get("lesions", {}).get(name)),
                ]
            )
    for name, m in result["per_class"].items():
        writer.writerow(
            [
                "mean",
                name,
                *(_csv_number(m[k]) for k in METRIC_NAMES),
                "",
                "",
                m["n_hd95_undefined"],
                *lesion_cells(lesions["classes"].get(name) if lesions else None),
            ]
        )
    mean = result["mean"]
    writer.writerow(
        ["mean", "foreground_mean", *(_csv_number(mean[k]) for k in METRIC_NAMES), "", "", "", *lesion_cells(None)]
    )
    csv_path = atomic_write_text(out_csv, buffer.getvalue())
    return json_path, csv_path
