"""``maskmed demo``: the embedded default job — segment a real held-out hippocampus MRI with the bundled
hippocampus model and score it against its manual labels; ``--phantom`` segments a synthetic CT phantom."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="segment the bundled real hippocampus MRI case with the bundled model (--phantom: a synthetic CT phantom)",
    )
    p.add_argument("--out", default="maskmed-demo", help="output folder (default: ./maskmed-demo)")
    p.add_argument(
        "--phantom", action="store_true", help="segment a freshly generated CT phantom with the phantom demo model"
    )
    p.add_argument(
        "--train", action="store_true", help="retrain the phantom demo model from scratch first (implies --phantom)"
    )
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--seed", type=int, help="phantom seed (implies --phantom; default: one no training case used)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar", help="progress of --train")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.demo import DEMO_SEED, run_demo

    phantom = args.phantom or args.train or args.seed is not None
    seed = DEMO_SEED if args.seed is None else args.seed
    report = run_demo(
        args.out, phantom=phantom, retrain=args.train, device=args.device, seed=seed, progress=args.progress
    )
    if report["demo"] == "phantom":
        print(f"MaskMed demo: phantom seed {report['phantom_seed']}, model {report['model']}")
        for organ, dice in report["dice"].items():
            print(f"  {organ:<14} Dice {dice:.3f}   volume {report['class_volumes_ml'][organ]:8.1f} mL")
    else:
        print(
            f"MaskMed demo: {report['case']} (a real T1 MRI from the {report['case_split']} split, never seen in "
            f"training; MSD Task04, CC-BY-SA 4.0), model {report['model']}"
        )
        if report["model_status"] == "placeholder":
            print("  note: the bundled hippocampus model is a development placeholder, not the final trained model")
        for name, dice in report["dice"].items():
            print(
                f"  {name:<14} Dice {dice:.3f}   volume {report['class_volumes_ml'][name]:6.2f} mL "
                f"(manual {report['reference_volumes_ml'][name]:.2f} mL)"
            )
    print(f"  mean Dice {report['mean_dice']:.3f}; prediction {report['predict_seconds']:.1f} s on {report['device']}")
    figures = "class_probabilities.png, overlay PNGs, " if report.get("figures") == "matplotlib" else ""
    print(f"outputs in {args.out}: labels, per-query maps, {figures}report.json")
    if not figures:
        print(f"  no figures: {report.get('figures')}")
    return 0
