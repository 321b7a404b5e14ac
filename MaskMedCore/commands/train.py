"""``maskmed train``: train MaskMed on a raw dataset folder (plans and preprocesses on first use)."""

from __future__ import annotations

import argparse

from MaskMedCore.commands._common import parse_overrides


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train on an nnU-Net v2 / MSD raw dataset folder")
    p.add_argument("dataset", help="raw dataset folder (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    p.add_argument("--fold", type=int, default=0, help="held-out fold 0..4, or -1 to train on all cases")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--iterations-per-epoch", type=int, default=250)
    p.add_argument("--val-iterations", type=int, default=50)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3, help="initial LR of the CNN (paper: 1e-3; nnU-Net: 1e-2)")
    p.add_argument("--transformer-lr-ratio", type=float, default=0.1, help="Transformer : CNN LR (paper: 0.1)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd (paper) or adamw")
    p.add_argument("--no-mirroring", action="store_true", help="no mirror augmentation (left/right labels)")
    p.add_argument("--batch-size", type=int, help="patches per iteration (default: the plan's)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("D", "H", "W"), help="plan this patch (first run)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--workers", type=int, default=2, help="background data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="switch data augmentation off")
    p.add_argument("--no-amp", action="store_true", help="switch mixed precision off on CUDA")
    p.add_argument("--max-minutes", type=float, help="stop with a resumable checkpoint after this wall time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--preprocessed", help="plan/preprocessed cache folder (default: under ~/.cache/maskmed)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field (ablations)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.config.training_config import TrainingConfig
    from MaskMedCore.engine.trainer import train

    config = TrainingConfig(
        preset=args.preset,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations=args.val_iterations,
        val_every=args.val_every,
        initial_lr=args.lr,
        transformer_lr_ratio=args.transformer_lr_ratio,
        optimizer=args.optimizer,
        mirror_axes=() if args.no_mirroring else (0, 1, 2),
        batch_size=args.batch_size,
        fold=args.fold,
        seed=args.seed,
        num_workers=args.workers,
        amp=not args.no_amp,
        augment=not args.no_augment,
        device=args.device,
        max_minutes=args.max_minutes,
    )
    result = train(
        args.dataset,
        args.out,
        config,
        preprocessed_dir=args.preprocessed,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        model_overrides=parse_overrides(args.set),
        progress=args.progress,
        resume=args.resume,
    )
    if result.stopped_early and "max-minutes" not in (result.stop_reason or ""):
        return 130  # interrupted (signal or cancel); the latest checkpoint is resumable
    return 0
