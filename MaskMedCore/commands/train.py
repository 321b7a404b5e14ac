"""``maskmed train``: train MaskMed on a raw dataset folder (plans and preprocesses on first use)."""

from __future__ import annotations

import argparse
from pathlib import Path

from MaskMedCore.commands._common import parse_overrides
from MaskMedCore.config.recipes import DEFAULT_RECIPE, RECIPES
from MaskMedCore.errors import ConfigError

DEFAULT_EPOCHS = 1000


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train on an nnU-Net v2 / MSD raw dataset folder")
    p.add_argument("dataset", help="raw dataset folder (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    p.add_argument("--fold", default="0", help="held-out fold 0..4 (or of --splits), or 'all' (= -1): every case")
    p.add_argument("--splits", metavar="FILE", help="split file in nnU-Net's splits_final.json format")
    p.add_argument("--epochs", type=int, help=f"epochs (default {DEFAULT_EPOCHS}); see --time-budget")
    p.add_argument("--time-budget", type=float, metavar="MIN", help="set epochs so the whole schedule takes ~MIN min")
    p.add_argument("--iterations-per-epoch", type=int, default=250)
    p.add_argument("--val-iterations", type=int, default=50)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=DEFAULT_RECIPE,
        help="optimiser, LRs and loss: maskmed (AdamW 3e-3, ratio 1, + semantic loss; default) or paper "
        "(SGD 1e-3, ratio 0.1, set loss only); the four options below override it",
    )
    p.add_argument("--lr", type=float, help="initial LR of the CNN (maskmed: 3e-3; paper: 1e-3; nnU-Net: 1e-2)")
    p.add_argument("--transformer-lr-ratio", type=float, help="Transformer : CNN LR (maskmed: 1; paper: 0.1)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (paper) or adamw (maskmed)")
    p.add_argument(
        "--semantic-weight",
        type=float,
        help="weight of CE + Dice on the decoupled head's composed class probabilities (maskmed: 2; paper: 0)",
    )
    p.add_argument("--no-mirroring", action="store_true", help="no mirror augmentation (left/right labels)")
    p.add_argument("--batch-size", type=int, help="patches per iteration (default: the plan's)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("D", "H", "W"), help="plan this patch (first run)")
    p.add_argument(
        "--configuration",
        choices=("auto", "3d_fullres", "3d_cpu", "2d"),
        default="auto",
        help="plan to train with: 3d_cpu (smaller patch) on a CPU, 3d_fullres on a GPU (auto); 2d: nnU-Net's 2d "
        "configuration, a 2D network trained on single slices (predicts slice by slice)",
    )
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--workers", type=int, default=2, help="background data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="switch data augmentation off")
    p.add_argument("--no-amp", action="store_true", help="switch mixed precision off on CUDA")
    p.add_argument("--max-minutes", type=float, help="stop with a resumable checkpoint after this wall time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument(
        "--stop-file",
        metavar="PATH",
        help="stop with a resumable checkpoint once PATH exists (checked after every iteration; exit 130); "
        "the file is removed when training ends",
    )
    p.add_argument(
        "--init-from",
        metavar="SRC",
        help="start from a trained model instead of random weights: an nnU-Net v2 result folder "
        "(Trainer__Plans__configuration) or a MaskMed run folder / checkpoint. Its encoder and decoder are loaded "
        "(and whatever else fits); its spacing, patch and UNet topology are used; its labels must be the dataset's",
    )
    p.add_argument("--init-fold", metavar="F", help="nnU-Net fold to load with --init-from (default: the first)")
    p.add_argument(
        "--init-checkpoint",
        choices=("final", "best"),
        default="final",
        help="checkpoint to load with --init-from: final (nnU-Net checkpoint_final.pth, MaskMed latest) or best",
    )
    p.add_argument(
        "--freeze-backbone-iterations",
        type=int,
        default=0,
        metavar="N",
        help="with --init-from: keep the loaded encoder and decoder fixed for the first N iterations (the new head "
        "and bridge learn on its features first), then train everything",
    )
    p.add_argument("--preprocessed", help="plan/preprocessed cache folder (default: under ~/.cache/maskmed)")
    p.add_argument(
        "--instance-classes",
        nargs="+",
        metavar="NAME",
        help="predict these labels as instances (each connected component its own query and segment); "
        "default: dataset.json 'instance_classes'; 'none' turns them off",
    )
    p.add_argument("--box-head", action="store_true", help="also predict a 3D box per query (L1 + GIoU loss)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field (ablations)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def parse_fold(text: str) -> int | str:
    """``all`` (nnU-Net's spelling, = -1) or an integer fold; the range is checked by TrainingConfig."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--fold is {text!r}; expected 'all' or -1 (train on every case, no validation) or a fold number 0..4"
        ) from None


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--set`` fields plus the multi-task flags (``--instance-classes`` names map to label values in training)."""
    overrides = parse_overrides(args.set)
    if args.instance_classes:
        names = [] if [n.lower() for n in args.instance_classes] == ["none"] else list(args.instance_classes)
        overrides["instance_classes"] = names
    if args.box_head:
        overrides["box_head"] = True
    return overrides


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.config.loss_config import LossConfig
    from MaskMedCore.config.training_config import TrainingConfig
    from MaskMedCore.engine.splits import check_fold, read_splits
    from MaskMedCore.engine.time_estimate import CPU_LIMIT_HOURS
    from MaskMedCore.engine.trainer import train

    if args.epochs is not None and args.time_budget is not None:
        raise ConfigError(
            f"--epochs {args.epochs} and --time-budget {args.time_budget:g} both set the schedule's length; give one"
        )
    if args.init_fold is not None and not args.init_from:
        raise ConfigError(f"--init-fold {args.init_fold} needs --init-from (the nnU-Net model to load the fold of)")
    fold = parse_fold(args.fold)
    num_folds = 5
    if args.splits:  # --fold indexes the file, so its length is the number of folds
        folds = read_splits(args.splits)
        check_fold(-1 if fold == "all" else fold, folds, args.splits)
        num_folds = len(folds)
    config = TrainingConfig(
        preset=args.preset,
        epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations=args.val_iterations,
        val_every=args.val_every,
        recipe=args.recipe,
        initial_lr=args.lr,
        transformer_lr_ratio=args.transformer_lr_ratio,
        optimizer=args.optimizer,
        mirror_axes=() if args.no_mirroring else (0, 1, 2),
        batch_size=args.batch_size,
        fold=fold,
        num_folds=num_folds,
        seed=args.seed,
        num_workers=args.workers,
        amp=not args.no_amp,
        augment=not args.no_augment,
        device=args.device,
        max_minutes=args.max_minutes,
        time_budget_minutes=args.time_budget,
        configuration=args.configuration,
        init_from=args.init_from,
        init_fold=args.init_fold,
        init_checkpoint=args.init_checkpoint,
        freeze_backbone_iterations=args.freeze_backbone_iterations,
    )
    semantic = RECIPES[args.recipe].semantic_weight if args.semantic_weight is None else args.semantic_weight
    result = train(
        args.dataset,
        args.out,
        config,
        loss_config=LossConfig(semantic_weight=semantic),
        preprocessed_dir=args.preprocessed,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        model_overrides=model_overrides(args),
        progress=args.progress,
        resume=args.resume,
        splits_file=args.splits,
        # A schedule whose length the user chose explicitly is never refused.
        cpu_limit_hours=None if args.epochs is not None else CPU_LIMIT_HOURS,
        stop_file=args.stop_file,
    )
    if args.stop_file:  # consumed: a later --resume with the same path trains on
        Path(args.stop_file).unlink(missing_ok=True)
    if result.stopped_early and "max-minutes" not in (result.stop_reason or ""):
        return 130  # interrupted (signal or cancel); the latest checkpoint is resumable
    return 0
