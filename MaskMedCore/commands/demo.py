"""``maskmed demo``: the embedded default job — segment a fresh synthetic CT phantom with the bundled model."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="segment a freshly generated CT phantom with the bundled demo model")
    p.add_argument("--out", default="maskmed-demo", help="output folder (default: ./maskmed-demo)")
    p.add_argument("--train", action="store_true", help="retrain the demo model from scratch first (minutes on CPU)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--seed", type=int, help="phantom seed (default: one no training case used)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.demo import DEMO_SEED, run_demo

    seed = DEMO_SEED if args.seed is None else args.seed
    report = run_demo(args.out, retrain=args.train, device=args.device, seed=seed, progress=args.progress)
    print(f"MaskMed demo: phantom seed {report['phantom_seed']}, model {report['model']}")
    for organ, dice in report["dice"].items():
        print(f"  {organ:<14} Dice {dice:.3f}   volume {report['class_volumes_ml'][organ]:8.1f} mL")
    print(f"  mean Dice {report['mean_dice']:.3f}; prediction {report['predict_seconds']:.1f} s on {report['device']}")
    print(f"outputs in {args.out}: labels, per-query maps, class_probabilities.png, overlay PNGs, report.json")
    return 0
