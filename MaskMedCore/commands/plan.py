"""``maskmed plan``: validate a raw dataset, fingerprint it, plan it and fill the preprocessed cache.

Writes ``fingerprint.json``, ``plan.json`` (nnU-Net's 3d_fullres configuration), ``plan_cpu.json``
(the CPU-sized 3d_cpu configuration: same spacing and normalisation, so the same preprocessed cases;
smaller patch, see ``data/planner.py``), ``plan_2d.json`` (nnU-Net's 2d configuration: a 2D network on
single slices of the same preprocessed cases, ``data/planner_2d.py``; ``--configuration`` limits which of
the last two are written) and the preprocessed cases into ``--out`` (default: the
per-dataset cache folder, never the dataset folder). A second run on an unchanged dataset reuses
the validation, the fingerprint and every preprocessed case.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from MaskMedCore.commands.validate_dataset import check_workers


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="validate, fingerprint, plan and preprocess a raw dataset")
    p.add_argument("dataset", metavar="DIR", help="dataset folder with dataset.json")
    p.add_argument("--out", metavar="PREPROCESSED_DIR", help="output folder (default: $MASKMED_PREPROCESSED/...)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("D", "H", "W"), help="patch instead of automatic")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="GPU memory to size patch and batch for")
    p.add_argument(
        "--configuration",
        choices=("all", "3d_fullres", "3d_cpu", "2d"),
        default="all",
        help="configurations to plan (default all); plan.json (3d_fullres) is always written: every "
        "configuration trains on the cases it preprocesses",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-preprocess", action="store_true", help="stop after writing plan.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import PLAN_FILES, cpu_plan, plan_dataset
    from MaskMedCore.data.planner_2d import plan_2d
    from MaskMedCore.data.preprocessed_store import (
        check_output_folder,
        dataset_signature,
        default_preprocessed_dir,
        preprocess_dataset,
    )
    from MaskMedCore.data.validate import validate_dataset
    from MaskMedCore.io_utils import atomic_write_text

    workers = check_workers(args.workers)
    dataset = load_dataset(args.dataset)
    out = check_output_folder(dataset, args.out or default_preprocessed_dir(dataset.folder))
    fingerprint_path = out / "fingerprint.json"
    signature = dataset_signature(dataset)
    fingerprint = _cached_fingerprint(fingerprint_path, signature)
    if fingerprint is not None:
        print(f"dataset unchanged since {fingerprint_path} was written: reusing its validation and fingerprint")
    else:
        problems = validate_dataset(dataset, workers=workers)
        if problems:
            for problem in problems:
                print(problem)
            print(f"stopping: {len(problems)} problem(s) in {dataset.folder}; fix them first")
            return 1
        fingerprint = compute_fingerprint(dataset, workers=workers)
        fingerprint["inputs_sha256"] = signature
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(fingerprint_path, json.dumps(fingerprint, indent=1) + "\n")
        print(f"fingerprint: {fingerprint_path}")

    plan = plan_dataset(
        dataset,
        fingerprint,
        gpu_memory_gb=args.gpu_memory_gb,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
    )
    plans = {"3d_fullres": plan}
    if args.configuration in ("all", "3d_cpu"):
        plans["3d_cpu"] = cpu_plan(plan, keep_patch=args.patch_size is not None)
    if args.configuration in ("all", "2d"):
        plans["2d"] = plan_2d(plan, len(dataset.cases), gpu_memory_gb=args.gpu_memory_gb)
    out.mkdir(parents=True, exist_ok=True)
    for name, configured in plans.items():
        atomic_write_text(out / PLAN_FILES[name], configured.to_json() + "\n")
    print(
        f"plan: {out / PLAN_FILES['3d_fullres']} (spacing {list(plan.target_spacing)}, patch {list(plan.patch_size)}, "
        f"batch {plan.batch_size}, {len(plan.strides)} stages, normalisation "
        f"{[n.scheme for n in plan.normalization]})"
    )
    if "3d_cpu" in plans:
        cpu = plans["3d_cpu"]
        print(
            f"CPU plan: {out / PLAN_FILES['3d_cpu']} (patch {list(cpu.patch_size)}, batch {cpu.batch_size}, "
            f"{len(cpu.strides)} stages; 'maskmed train' uses it on a CPU unless given --configuration 3d_fullres)"
        )
    if "2d" in plans:
        flat = plans["2d"]
        print(
            f"2d plan: {out / PLAN_FILES['2d']} (slice patch {list(flat.network_patch_size)}, batch "
            f"{flat.batch_size}, {len(flat.strides)} stages; 'maskmed train --configuration 2d')"
        )
    if args.no_preprocess:
        return 0
    summary = preprocess_dataset(dataset, plan, out, workers=workers, progress=True)
    print(
        f"preprocessed: {out} ({len(summary.case_ids)} case(s): {len(summary.computed)} computed, "
        f"{len(summary.reused)} reused)"
    )
    return 0


def _cached_fingerprint(path: Path, signature: str) -> dict | None:
    try:
        fingerprint = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return fingerprint if isinstance(fingerprint, dict) and fingerprint.get("inputs_sha256") == signature else None
