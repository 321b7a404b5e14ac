"""``maskmed phantom``: write a synthetic abdominal CT dataset (nnU-Net v2 raw layout)."""

from __future__ import annotations

import argparse

from MaskMedCore.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "phantom", help="write synthetic abdominal CT phantoms (liver, spleen, kidneys, aorta) as an nnU-Net dataset"
    )
    p.add_argument("--out", required=True, help="new or empty folder to write the dataset into")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed + i (default 0)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="array size (default 48 96 96)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("D", "H", "W"), help="voxel size in mm (default 4 3 3)")
    p.add_argument("--name", default="MaskMedPhantom", help="dataset name written to dataset.json")
    p.add_argument(
        "--lesions",
        type=int,
        default=0,
        metavar="MAX",
        help="add 0..MAX liver/kidney lesions per case (label 'lesion', instance maps in instancesTr/, case labels "
        "lesion_count and lesion_type in dataset.json); default 0: no lesions",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.data.phantom import DEFAULT_PHANTOM_SHAPE, DEFAULT_PHANTOM_SPACING, write_phantom_dataset

    if args.cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {args.cases}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.lesions < 0:
        raise ConfigError(f"--lesions must be a non-negative integer (the most lesions per case), got {args.lesions}")
    out = write_phantom_dataset(
        args.out,
        args.cases,
        seed=args.seed,
        shape=tuple(args.shape) if args.shape else DEFAULT_PHANTOM_SHAPE,
        spacing=tuple(args.spacing) if args.spacing else DEFAULT_PHANTOM_SPACING,
        name=args.name,
        max_lesions=args.lesions,
    )
    print(out)
    return 0
