"""``maskmed evaluate``: Dice, HD95 and NSD of a prediction folder against a reference folder.

``--lesion-classes`` adds lesion metrics for some classes (lesion counts, BraTS 2023 lesion-wise Dice,
detection TP/FP/FN, AP and FROC; ``MaskMedCore.metrics.lesion_evaluation``) and a second table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from MaskMedCore.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score predicted label maps against references (Dice, HD95, normalised surface Dice)"
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label maps")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference label maps with the same names")
    p.add_argument(
        "--labels",
        metavar="DATASET_JSON",
        help="nnU-Net or MSD dataset.json naming the classes (default: every non-zero value found)",
    )
    p.add_argument("--tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.csv (default: <pred>/evaluation)")
    p.add_argument("--workers", type=int, default=1, help="cases evaluated in parallel processes (default 1)")
    p.add_argument(
        "--lesion-classes",
        nargs="+",
        metavar="NAME",
        help="classes (names from --labels, or integer label values) that also get lesion metrics: lesion counts, "
        "BraTS 2023 lesion-wise Dice, detection TP/FP/FN, AP at IoU 0.1/0.25/0.5 and FROC",
    )
    p.add_argument(
        "--lesion-dilation",
        type=int,
        default=3,
        metavar="VOXELS",
        help="dilation of the lesion-wise Dice in voxels (default 3, BraTS 2023 glioma)",
    )
    p.add_argument(
        "--min-lesion-volume",
        type=float,
        default=50.0,
        metavar="MM3",
        help="reference lesions of at most this volume are not scored by the lesion-wise Dice "
        "(default 50 mm^3, BraTS 2023 glioma)",
    )
    p.add_argument(
        "--case-labels",
        metavar="DATASET_JSON",
        help="dataset.json with case_labels: score the case-level predictions of <case>_summary.json "
        "(accuracy and ROC AUC per task)",
    )
    p.set_defaults(func=run)


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(result: dict) -> str:
    """A short per-class table of an ``evaluate_folders`` result."""
    tol = result["tolerance_mm"]
    nsd_head = f"NSD@{tol:g}mm"
    width = max([len("class"), len("mean")] + [len(n) for n in result["per_class"]])
    lines = [f"{'class':<{width}}  {'Dice':>7}  {'HD95 mm':>8}  {nsd_head:>10}  {'cases':>5}  HD95 undefined"]
    for name, m in result["per_class"].items():
        lines.append(
            f"{name:<{width}}  {_fmt(m['dice'], 4):>7}  {_fmt(m['hd95'], 2):>8}  {_fmt(m['nsd'], 4):>10}  "
            f"{m['n_cases']:>5}  {m['n_hd95_undefined']}"
        )
    mean = result["mean"]
    lines.append(
        f"{'mean':<{width}}  {_fmt(mean['dice'], 4):>7}  {_fmt(mean['hd95'], 2):>8}  {_fmt(mean['nsd'], 4):>10}"
    )
    return "\n".join(lines)


def format_lesion_table(lesions: dict) -> str:
    """A short per-class table of the ``"lesions"`` part of an ``evaluate_folders`` result."""
    rates = "/".join(format(r, "g") for r in lesions["froc_fp_per_case"])
    ious = [format(t, "g") for t in lesions["iou_thresholds"]]
    froc_head = f"sens@{rates} FP/case"
    classes = lesions["classes"]
    width = max([len("class")] + [len(n) for n in classes])
    ap_heads = "  ".join(f"{'AP@' + t:>7}" for t in ious)
    lines = [
        f"lesions (26-connected): lesion-wise Dice as BraTS 2023 (dilation {lesions['dilation_voxels']} voxels, "
        f"lesions <= {lesions['min_volume_mm3']:g} mm^3 left out); AP and FROC use the model's instance scores "
        "where the predictions have <case>_instances files, else score each component 1.0",
        f"{'class':<{width}}  {'ref':>5}  {'pred':>5}  {'Dice':>7}  {'lesion Dice':>11}  {ap_heads}  {froc_head}",
    ]
    for name, m in classes.items():
        aps = "  ".join(f"{_fmt(m['detection'][t]['ap'], 4):>7}" for t in ious)
        froc = "/".join(_fmt(s, 2) for s in m["froc"].values())
        lines.append(
            f"{name:<{width}}  {m['ref_lesions']:>5}  {m['pred_lesions']:>5}  {_fmt(m['voxel_dice'], 4):>7}  "
            f"{_fmt(m['lesion_dice'], 4):>11}  {aps}  {froc}"
        )
    return "\n".join(lines)


def _read_case_labels(path: str):
    """(tasks, truth) from a dataset.json's ``case_labels`` (``data/multitask_spec.py``)."""
    from MaskMedCore.data.dataset import load_dataset

    meta = Path(path)
    if meta.is_dir():
        meta = meta / "dataset.json"
    spec = load_dataset(meta.parent).multitask
    if not spec.case_tasks:
        raise ConfigError(f"--case-labels {path}: dataset.json declares no case_labels tasks")
    return spec.case_tasks, spec.case_labels


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.metrics.evaluate import evaluate_folders, read_dataset_labels, write_report

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise ConfigError(f"--tolerance must be a number of mm >= 0, got {args.tolerance}")
    labels = read_dataset_labels(args.labels) if args.labels else None
    if args.lesion_dilation < 0:
        raise ConfigError(f"--lesion-dilation must be a number of voxels >= 0, got {args.lesion_dilation}")
    if not (math.isfinite(args.min_lesion_volume) and args.min_lesion_volume >= 0):
        raise ConfigError(f"--min-lesion-volume must be a number of mm^3 >= 0, got {args.min_lesion_volume}")
    result = evaluate_folders(
        args.pred,
        args.ref,
        labels,
        tolerance_mm=args.tolerance,
        workers=args.workers,
        lesion_classes=args.lesion_classes,
        lesion_dilation=args.lesion_dilation,
        min_lesion_volume_mm3=args.min_lesion_volume,
        case_labels=_read_case_labels(args.case_labels) if args.case_labels else None,
    )
    prefix = args.out if args.out else str(Path(args.pred) / "evaluation")
    json_path, csv_path = write_report(result, f"{prefix}.json", f"{prefix}.csv")
    print(f"{result['n_cases']} cases")
    if not result["per_class"]:
        print("no foreground classes found")
    else:
        print(format_table(result))
    if "lesions" in result:
        print(format_lesion_table(result["lesions"]))
        for name, m in result["lesions"]["classes"].items():
            if "boxes" in m:
                b = m["boxes"]
                print(
                    f"{name} boxes (IoU with the reference lesion's box; small: <= the median "
                    f"{b['small_lesion_mm3']:.0f} mm^3): "
                    f"mask {_fmt(b['mask_all'], 3)} (small {_fmt(b['mask_small'], 3)}, n={b['n_mask_small']}), "
                    f"head {_fmt(b['head_all'], 3)} (small {_fmt(b['head_small'], 3)}, n={b['n_head_small']})"
                )
    for task, m in result.get("case_classification", {}).items():
        note = f" ({m['auc_note']})" if m["auc_note"] else ""
        print(
            f"case task {task}: accuracy {_fmt(m['accuracy'], 3)}, ROC AUC {_fmt(m['roc_auc'], 3)}{note} "
            f"({m['n_labelled']} of {m['n_cases']} cases labelled)"
        )
    if result["ignored_values"]:
        print(f"note: label values {result['ignored_values']} are in no class of --labels and were not scored")
    print(f"wrote {json_path} and {csv_path}")
    return 0
