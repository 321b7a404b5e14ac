"""``maskmed validate-dataset``: list every problem of a raw dataset, one line each.

Exit status: 0 when the dataset is clean (warnings, e.g. mixed orientations, are printed but do
not fail it), 1 when problems were found, 2 when the folder is not a usable dataset (no
dataset.json, invalid fields, no cases).
"""

from __future__ import annotations

import argparse

from MaskMedCore.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate-dataset",
        help="check a raw dataset (nnU-Net v2 or MSD layout) and list every problem with its fix",
    )
    p.add_argument("dataset", metavar="DIR", help="dataset folder with dataset.json")
    p.add_argument("--workers", type=int, default=1, help="worker processes reading cases (default 1)")
    p.set_defaults(func=run)


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    return workers


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.validate import check_dataset

    dataset = load_dataset(args.dataset)
    problems, warnings = check_dataset(dataset, workers=check_workers(args.workers))
    for problem in problems:
        print(problem)
    for warning in warnings:  # do not change the exit status: the dataset is usable
        print(f"warning: {warning}")
    n = len(dataset.cases)
    if problems:
        bad = len({p.case_id for p in problems if p.case_id is not None})
        print(f"{len(problems)} problem(s) in {bad} of {n} case(s) of {dataset.folder}; fix them and run again")
        return 1
    print(
        f"dataset {dataset.name} is valid: {n} case(s), channels {list(dataset.channel_names)}, "
        f"{len(dataset.labels)} labels {dataset.labels}"
    )
    return 0
