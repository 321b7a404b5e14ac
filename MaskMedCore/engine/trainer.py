"""The training loop (MaskMed appendix C on nnU-Net v2's trainer).

SGD (Nesterov, momentum 0.99, weight decay 3e-5) over two parameter groups (CNN and
Transformer, LR ratio 1 : 0.1) with per-group poly decay; deep supervision; gradient clipping;
AMP on CUDA; patches from background workers, augmented on the training device; validation
pseudo-Dice every few epochs with the best checkpoint chosen on its moving average; atomic
``checkpoint_latest.pt`` (every epoch, and on stop) and ``checkpoint_best.pt``; resumable at any
iteration; DDP when launched by ``torchrun``. Before the first step the schedule's duration is
estimated from a few timed steps and reported; it sets the epochs of a time budget and refuses an
unsized CPU run that would not finish (``time_estimate.py``). A run can start from a pretrained
nnU-Net or MaskMed model (``init_from.py``, ``init_weights.py``) with its encoder and decoder frozen
for the first iterations (``backbone_freeze.py``).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.config.recipes import get_recipe
from MaskMedCore.config.training_config import TrainingConfig
from MaskMedCore.engine.backbone_freeze import BackboneFreeze
from MaskMedCore.engine.checkpoint import load_checkpoint, save_checkpoint
from MaskMedCore.engine.distributed import DistributedContext, init_distributed, shutdown_distributed
from MaskMedCore.engine.init_weights import InitReport
from MaskMedCore.engine.lr_schedule import PerGroupPolyLR
from MaskMedCore.engine.progress import ProgressReporter
from MaskMedCore.engine.pseudo_dice import PseudoDice
from MaskMedCore.engine.rng_state import capture_rng, restore_rng
from MaskMedCore.engine.splits import write_splits
from MaskMedCore.engine.time_estimate import CPU_LIMIT_HOURS, ScheduleEstimate, estimate_schedule
from MaskMedCore.engine.train_setup import choose_split, config_for_splits, load_cases, prepare_plan
from MaskMedCore.engine.train_step import make_patch_pipeline, train_step
from MaskMedCore.errors import CheckpointError, ConfigError
from MaskMedCore.io_utils import atomic_write_text

LATEST, BEST = "checkpoint_latest.pt", "checkpoint_best.pt"


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    iterations_done: int
    best_val_mean_dice: float | None
    stopped_early: bool
    stop_reason: str | None = None
    parameter_digest: str = ""  # sha256 of this rank's final parameters (DDP ranks must agree)
    history: list[dict[str, Any]] = field(default_factory=list)
    estimate: ScheduleEstimate | None = None  # the duration estimated before the first step
    config: TrainingConfig | None = None  # the recipe as run (configuration and time-budget epochs resolved)
    init_report: InitReport | None = None  # what --init-from loaded (None: from scratch, or a resumed run)


def resolve_configuration(name: str, device: torch.device, single_slice: bool = False) -> str:
    """``auto`` -> ``2d`` for a dataset of single-slice images (PNG photos, DICOM frames: a 3D network would
    have nothing to convolve across; nnU-Net plans only ``2d`` for them), else ``3d_cpu`` on the CPU and
    ``3d_fullres`` on a GPU; other names as they are."""
    if name != "auto":
        return name
    if single_slice:
        return "2d"
    return "3d_cpu" if device.type == "cpu" else "3d_fullres"


def single_slice_dataset(dataset_dir: Path) -> bool:
    """True when every case's first image is one slice (a 2D file, or a 3D file of depth 1); headers only."""
    import SimpleITK as sitk

    from MaskMedCore.data.dataset import load_dataset

    reader = sitk.ImageFileReader()
    for case in load_dataset(dataset_dir).cases:
        reader.SetFileName(str(case.image_paths[0]))
        reader.ReadImageInformation()
        if reader.GetDimension() != 2 and reader.GetSize()[2] != 1:
            return False
    return True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


class _StopFlag:
    """Set by SIGINT/SIGTERM, by ``cancel()``, by the stop file appearing, or by the time limit; checked
    after every iteration."""

    def __init__(self, cancel: Callable[[], bool] | None, stop_file: Path | None = None) -> None:
        self.cancel = cancel
        self.stop_file = stop_file
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.reason = f"received signal {signal.Signals(signum).name}"

    def check(self) -> bool:
        if self.reason is None and self.cancel is not None and self.cancel():
            self.reason = "cancelled"
        if self.reason is None and self.stop_file is not None and self.stop_file.exists():
            self.reason = f"stop file {self.stop_file} appeared"
        return self.reason is not None


def train(
    dataset_dir: str | Path,
    run_dir: str | Path,
    config: TrainingConfig,
    *,
    preprocessed_dir: str | Path | None = None,
    patch_size: tuple[int, int, int] | None = None,
    model_overrides: dict[str, Any] | None = None,
    loss_config: LossConfig | None = None,
    progress: str = "bar",
    resume: bool = False,
    cancel: Callable[[], bool] | None = None,
    splits_file: str | Path | None = None,
    cpu_limit_hours: float | None = CPU_LIMIT_HOURS,
    stop_file: str | Path | None = None,
) -> TrainResult:
    """Train MaskMed on a raw dataset folder; write checkpoints and logs to ``run_dir``.

    Args:
        dataset_dir: nnU-Net v2 or MSD raw dataset.
        run_dir: output folder (created; an existing run is only continued with ``resume``).
        config: training recipe (on resume, the run's saved recipe is used; only ``device``,
            ``num_workers`` and ``max_minutes`` may change). With ``config.init_from`` the run starts from
            that model's weights, plan topology and patch (``engine/init_from.py``); ``patch_size`` and
            ``model_overrides`` must then agree with it.
        preprocessed_dir: cache folder of the plan and preprocessed cases (default: per dataset under
            ``~/.cache/maskmed``).
        patch_size: plan this patch instead of the automatic one (first planning only).
        model_overrides: ModelConfig fields to change from the preset (ablations).
        loss_config: loss weights and options.
        progress: ``bar``, ``json`` or ``none``.
        resume: continue ``run_dir`` from its latest checkpoint (same LR schedule and step count).
        cancel: polled after every iteration; True stops with a resumable checkpoint.
        stop_file: a path polled after every iteration like ``cancel``: once the file exists, training
            stops with a resumable checkpoint. Another process can ask for the stop on any OS, even
            through a launcher that forwards no signals (3D Slicer's ``PythonSlicer``).
        splits_file: a split file in nnU-Net's ``splits_final.json`` format to train with (checked
            against the dataset, copied into the run as ``splits.json``; ``num_folds`` becomes its length).
        cpu_limit_hours: on the CPU, refuse a new run whose estimated duration exceeds this, unless
            ``config.time_budget_minutes`` sized it; ``None`` never refuses (the CLI passes None when
            ``--epochs`` is given).

    Before the first step the schedule's duration is estimated from a few timed steps
    (``engine/time_estimate.py``), reported (``estimate`` event), and used for
    ``config.time_budget_minutes``. A refused run raises before anything is written into ``run_dir``.

    Raises:
        ConfigError: bad options, an existing run without ``resume``, or a refused CPU run.
        DataError: the dataset or a split file is invalid.
        CheckpointError: ``resume`` without a readable checkpoint.
    """
    run_dir = Path(run_dir)
    latest_path = run_dir / LATEST
    checkpoint = None
    if config.init_from:  # recorded as an absolute path: the run's record must not depend on the working folder
        config = config.replace(init_from=str(Path(config.init_from).expanduser().resolve()))
    if resume:
        if not latest_path.is_file():
            raise CheckpointError(f"cannot resume: {latest_path} does not exist")
        checkpoint = load_checkpoint(latest_path)
        saved = TrainingConfig.from_json(checkpoint.training_config_json, source=f"{latest_path}: training_config")
        if "configuration" not in json.loads(checkpoint.training_config_json):
            saved = saved.replace(configuration="3d_fullres")  # runs from before plan_cpu.json trained on plan.json
        if config.init_from and config.init_from != saved.init_from:
            raise ConfigError(
                f"--init-from {config.init_from} differs from the source this run started from "
                f"({saved.init_from or 'none: it started from scratch'}); a resumed run continues from its own "
                "checkpoint: drop --init-from, or start a new run with another --out"
            )
        config = saved.replace(device=config.device, num_workers=config.num_workers, max_minutes=config.max_minutes)
        loss_config = checkpoint.loss_config
    elif latest_path.exists():
        raise ConfigError(
            f"{run_dir} already holds a training run ({LATEST}); pass --resume to continue it or choose another --out"
        )
    device = resolve_device(config.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    try:
        return _run(
            dataset_dir,
            run_dir,
            config,
            device,
            ctx,
            preprocessed_dir,
            patch_size,
            model_overrides,
            loss_config or LossConfig(semantic_weight=get_recipe(config.recipe).semantic_weight),
            progress,
            checkpoint,
            cancel,
            splits_file,
            cpu_limit_hours,
            None if stop_file is None else Path(stop_file),
        )
    finally:
        shutdown_distributed(ctx)


def _run(
    dataset_dir,
    run_dir,
    config,
    device,
    ctx,
    preprocessed_dir,
    patch_size,
    model_overrides,
    loss_config,
    progress_mode,
    checkpoint,
    cancel,
    splits_file,
    cpu_limit_hours,
    stop_file,
) -> TrainResult:
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.planner import PLAN_FILES
    from MaskMedCore.engine import init_from
    from MaskMedCore.engine.init_weights import initial_state
    from MaskMedCore.engine.multitask_setup import case_targets_for, multitask_overrides
    from MaskMedCore.losses.build import build_criterion
    from MaskMedCore.models.build import build_model

    # Nothing is written into the run folder before the run is known to go ahead (dataset read and
    # planned, split checked, duration estimated): bad input or a refused run leaves nothing behind.
    single_slice = config.configuration == "auto" and single_slice_dataset(Path(dataset_dir))
    config = config.replace(configuration=resolve_configuration(config.configuration, device, single_slice))
    source = None
    if checkpoint is None and config.init_from:  # a resumed run never reads its source again
        source = init_from.read_init_source(config.init_from, config.init_fold, config.init_checkpoint)
        init_from.check_patch_option(source, patch_size)
        config, patch_size = config.replace(init_fold=source.fold), None
    plan, folder, case_ids = prepare_plan(
        Path(dataset_dir),
        preprocessed_dir,
        ctx,
        patch_size,
        progress=ctx.is_main,
        configuration=config.configuration,
        target_spacing=None if source is None else source.target_spacing,
    )
    if source is not None:
        plan = init_from.plan_for_source(plan, source, folder / PLAN_FILES[config.configuration])
    elif checkpoint is not None and config.init_from:  # the source's patch and topology, as saved
        plan = init_from.with_topology_of(plan, checkpoint.plan)
    if checkpoint is not None and checkpoint.plan != plan:
        raise CheckpointError(
            f"the dataset's plan in {folder} differs from the plan this run was trained with; "
            "resume with the same --preprocessed folder"
        )
    if splits_file is not None:
        config = config_for_splits(config, splits_file)
    folds, train_ids, val_ids = choose_split(case_ids, run_dir, config, splits_file, resume=checkpoint is not None)
    train_cases, val_cases = load_cases(folder, train_ids), load_cases(folder, val_ids)
    spec = load_dataset(dataset_dir).multitask
    model_overrides = multitask_overrides(spec, plan.label_names, model_overrides)
    if checkpoint is not None:
        model_cfg = checkpoint.model_config
    elif source is not None:
        model_cfg = init_from.model_config_for_source(plan, config.preset, model_overrides, source)
    else:
        model_cfg = plan.model_config(config.preset, **model_overrides)
    case_targets = case_targets_for(model_cfg, spec, train_ids, Path(dataset_dir))
    batch_size = config.batch_size or plan.batch_size

    torch.manual_seed(config.seed)
    # channels_last_3d is a 5-D layout; a 2D network (2d configuration) keeps the default layout.
    channels_last = config.channels_last and model_cfg.spatial_dims == 3
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = build_model(model_cfg).to(device, memory_format=memory_format)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
    init_report = None
    if source is not None:
        state_dict, init_report = initial_state(model.state_dict(), source.state, source.description, model_cfg.head)
        model.load_state_dict(state_dict)
        source = state_dict = None  # the source's tensors are copied into the model; free them
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    criterion = build_criterion(model_cfg, loss_config, reduce_num_masks=ctx.all_reduce_mean if ctx.enabled else None)
    sampler, augmenter = make_patch_pipeline(train_cases, plan, config, batch_size, case_targets)
    step_args = dict(device=device, use_amp=use_amp, amp_dtype=amp_dtype, memory_format=memory_format)
    state = dict(epoch=0, epoch_iteration=0, iteration=0, best_ema=-math.inf, ema=None, history=[])
    if checkpoint is not None:
        state.update({k: checkpoint.training_state[k] for k in state})

    config, estimate = estimate_schedule(
        model,
        lambda twin: build_optimizer(twin, config),
        criterion,
        sampler,
        augmenter,
        val_cases,
        plan.patch_size,
        batch_size,
        config,
        ctx,
        step_args,
        start_epoch=state["epoch"],
        start_iteration=state["iteration"],
        resumed=checkpoint is not None,
        cpu_limit_hours=cpu_limit_hours,
        announce=ctx.is_main and progress_mode == "bar",
    )
    optimizer = build_optimizer(model, config)  # every parameter, frozen or not (backbone_freeze.py)
    scheduler = PerGroupPolyLR(optimizer, config.initial_lr, config.epochs, config.poly_exponent)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    freeze = BackboneFreeze(model, config.freeze_backbone_iterations)
    freeze.update(state["iteration"])  # before wrapping: DDP synchronises what requires gradients when built

    def wrap() -> torch.nn.Module:
        if not ctx.enabled:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    net = wrap()

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if folds is not None:
            write_splits(run_dir / "splits.json", folds)
    ctx.barrier()
    aug_gen = torch.Generator().manual_seed(config.seed * 1000 + ctx.rank)
    np_rng = np.random.default_rng([config.seed, ctx.rank])
    if checkpoint is not None:
        ts = checkpoint.training_state
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if ts.get("grad_scaler"):
            scaler.load_state_dict(ts["grad_scaler"])
        restore_rng(ts["rng"], aug_gen, np_rng)

    if ctx.is_main:
        for name, text in (
            ("plan.json", plan.to_json()),
            ("model_config.json", model_cfg.to_json()),
            ("training_config.json", config.to_json()),
            ("loss_config.json", loss_config.to_json()),
        ):
            atomic_write_text(run_dir / name, text + "\n")

    def save(path: Path) -> None:
        training_state = {
            **{k: state[k] for k in ("epoch", "epoch_iteration", "iteration", "best_ema", "ema", "history")},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "grad_scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": capture_rng(aug_gen, np_rng),
        }
        save_checkpoint(
            path,
            model=model,
            model_config=model_cfg,
            plan=plan,
            loss_config=loss_config,
            training_config_json=config.to_json(),
            training_state=training_state,
        )

    reporter = ProgressReporter(
        progress_mode if ctx.is_main else "none",
        config.total_iterations,
        state["iteration"],
        log_path=run_dir / "train.log" if ctx.is_main else None,
    )
    reporter.estimate(
        estimate.summary(),
        **estimate.event(
            device=device.type, configuration=config.configuration, time_budget_minutes=config.time_budget_minutes
        ),
    )
    if init_report is not None:
        reporter.init(init_report.summary(), **init_report.event())
    if freeze.frozen:
        reporter.message(
            f"encoder and decoder frozen until iteration {config.freeze_backbone_iterations} "
            f"(--freeze-backbone-iterations); training the rest from iteration {state['iteration']}"
        )
    loader = _make_loader(sampler, config, ctx, state)
    start = time.monotonic()
    stopped = False
    try:
        with _StopFlag(cancel, stop_file) as stop, loader:
            batches = iter(loader)
            while state["epoch"] < config.epochs:
                epoch = state["epoch"]
                scheduler.step(epoch)
                net.train()
                model.deep_supervision = True
                losses = []
                while state["epoch_iteration"] < config.iterations_per_epoch:
                    if state["iteration"] <= config.warmup_iterations:  # the last call restores the poly LR
                        _warm_up(optimizer, scheduler, epoch, state["iteration"], config.warmup_iterations)
                    if freeze.update(state["iteration"]):
                        net = wrap()
                        reporter.message(f"encoder and decoder unfrozen after {state['iteration']} iterations")
                    loss, terms = train_step(
                        net,
                        criterion,
                        optimizer,
                        scaler,
                        augmenter,
                        batches,
                        device,
                        use_amp,
                        amp_dtype,
                        config.grad_clip,
                        aug_gen,
                        memory_format,
                    )
                    losses.append(loss)
                    state["epoch_iteration"] += 1
                    state["iteration"] += 1
                    last = state["epoch_iteration"] == config.iterations_per_epoch
                    reporter.iteration(epoch, state["iteration"], loss, terms, optimizer.param_groups[0]["lr"], last)
                    over_time = config.max_minutes is not None and time.monotonic() - start > 60 * config.max_minutes
                    if over_time and stop.reason is None:
                        stop.reason = f"reached --max-minutes {config.max_minutes}"
                    if _any_rank(stop.check(), ctx):
                        break
                if state["epoch_iteration"] < config.iterations_per_epoch:  # stopped mid-epoch
                    stopped = True
                    if ctx.is_main:
                        save(run_dir / LATEST)
                        reporter.message(f"stopped ({stop.reason}); checkpoint saved, continue with --resume")
                    break
                val_dice = None
                if val_cases and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                    val_dice = _validate(model, val_cases, plan, config, batch_size, device, ctx, epoch, memory_format)
                state["epoch"] += 1
                state["epoch_iteration"] = 0
                mean_loss = float(np.mean(losses)) if losses else float("nan")
                named = (
                    None
                    if val_dice is None
                    else {plan.label_names[k + 1]: d for k, d in enumerate(val_dice) if d is not None}
                )  # noqa: E501
                state["history"].append(
                    {"epoch": epoch, "iteration": state["iteration"], "train_loss": mean_loss, "val_dice": named}
                )
                if ctx.is_main:
                    save(run_dir / LATEST)
                    if named:
                        mean = float(np.mean(list(named.values())))
                        state["ema"] = mean if state["ema"] is None else 0.9 * state["ema"] + 0.1 * mean
                        if state["ema"] > state["best_ema"]:
                            state["best_ema"] = state["ema"]
                            save(run_dir / BEST)
                    elif not val_cases:
                        save(run_dir / BEST)  # no validation (fold -1): the latest is the best we know
                    reporter.epoch(epoch, state["iteration"], mean_loss, optimizer.param_groups[0]["lr"], named)
    finally:
        reporter.done(epochs_done=state["epoch"], iterations_done=state["iteration"], stopped_early=stopped)
        reporter.close()
    best = None if state["best_ema"] == -math.inf else float(state["best_ema"])
    reason = stop.reason if stopped else None
    return TrainResult(
        run_dir,
        state["epoch"],
        state["iteration"],
        best,
        stopped,
        reason,
        parameter_digest(model),
        state["history"],
        estimate,
        config,
        init_report,
    )


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """SGD (paper) or AdamW over the CNN and Transformer groups (each with its ``lr_scale``)."""
    groups = model.param_groups(config.initial_lr, config.transformer_lr_ratio, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.initial_lr)
    return torch.optim.SGD(groups, lr=config.initial_lr, momentum=config.momentum, nesterov=config.nesterov)


def _any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """Stop decisions must be collective under DDP, or ranks would wait on each other forever."""
    if not ctx.enabled:
        return flag
    return bool(ctx.all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


def _make_loader(sampler, config: TrainingConfig, ctx, state):
    from MaskMedCore.data.loader import BatchLoader

    # A resumed run continues with a fresh but deterministic stream of patches.
    seed = (config.seed * 1_000_003 + state["epoch"] * 10_007 + state["epoch_iteration"]) % 2**31
    return BatchLoader(sampler, num_workers=config.num_workers, seed=seed, rank=ctx.rank)


def _warm_up(optimizer, scheduler: PerGroupPolyLR, epoch: int, iteration: int, warmup: int) -> None:
    """Scale every group's poly LR by (iteration + 1) / warmup while warming up (1 from then on)."""
    factor = min(1.0, (iteration + 1) / warmup) if warmup else 1.0
    for group in optimizer.param_groups:
        group["lr"] = scheduler.lr_at(epoch, group.get("lr_scale", 1.0)) * factor


@torch.no_grad()
def _validate(
    model, val_cases, plan, config: TrainingConfig, batch_size, device, ctx, epoch, memory_format
) -> list[float | None]:
    """Per-class validation Dice: pseudo-Dice on random validation patches (foreground-oversampled, no
    augmentation), or with ``validation="cases"`` the mean Dice of whole-case predictions."""
    from MaskMedCore.data.sampling import PatchSampler
    from MaskMedCore.engine.case_validation import validate_cases
    from MaskMedCore.models.outputs import semantic_probs

    model.eval()
    model.deep_supervision = False
    if config.validation == "cases":
        from MaskMedCore.inference.cpu_batching import forward_batch_padded, needs_batch_padding

        min_batch = 2 if needs_batch_padding(device, model.encoder.features_per_stage[0], plan.patch_size) else 1
        dice = validate_cases(
            lambda x: semantic_probs(forward_batch_padded(model, x.contiguous(memory_format=memory_format), min_batch)),
            val_cases,
            plan.patch_size,
            plan.num_classes,
            device,
            ctx,
        )
        model.train()
        model.deep_supervision = True
        return dice
    sampler = PatchSampler(val_cases, plan.patch_size, plan.patch_size, batch_size, config.oversample_foreground)
    rng = np.random.default_rng([config.seed, epoch, ctx.rank, 7])
    meter = PseudoDice(plan.num_classes, device)
    rounds = max(1, math.ceil(config.val_iterations / ctx.world_size))
    for _ in range(rounds):
        images, labels = sampler.sample_batch(rng)
        x = torch.from_numpy(images).to(device).contiguous(memory_format=memory_format)
        pred = semantic_probs(model(x)).argmax(1)
        meter.update(pred, torch.from_numpy(labels.astype(np.int64)).to(device))
    counts = ctx.all_reduce_sum(meter.counts.cpu()) if ctx.enabled else meter.counts
    model.train()
    model.deep_supervision = True
    return meter.dice(counts)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Epoch events of a run's log (for reports and the Slicer plot)."""
    log = Path(run_dir) / "train.log"
    if not log.is_file():
        return []
    events = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return [e for e in events if e.get("event") == "epoch"]
