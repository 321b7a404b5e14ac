"""``maskmed evaluate``: Dice, HD95 and NSD of a prediction folder against a reference folder."""

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


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.metrics.evaluate import evaluate_folders, read_dataset_labels, write_report

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise ConfigError(f"--tolerance must be a number of mm >= 0, got {args.tolerance}")
    labels = read_dataset_labels(args.labels) if args.labels else None
    result = evaluate_folders(args.pred, args.ref, labels, tolerance_mm=args.tolerance, workers=args.workers)
    prefix = args.out if args.out else str(Path(args.pred) / "evaluation")
    json_path, csv_path = write_report(result, f"{prefix}.json", f"{prefix}.csv")
    print(f"{result['n_cases']} cases")
    if not result["per_class"]:
        print("no foreground classes found")
    else:
        print(format_table(result))
    if result["ignored_values"]:
        print(f"note: label values {result['ignored_values']} are in no class of --labels and were not scored")
    print(f"wrote {json_path} and {csv_path}")
    return 0
