"""Everything a training run needs before its first step: the dataset, its plan and preprocessed
cache (made on first use and re-used afterwards), and the split.

Nothing here writes into the run folder: the trainer writes the split (``write_splits``) only once
it has decided to train, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.config.training_config import TrainingConfig
from MaskMedCore.engine.distributed import DistributedContext
from MaskMedCore.engine.splits import Folds, check_fold, check_splits, make_splits, read_splits
from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_text


@dataclass
class PreparedData:
    plan: PlanConfig
    preprocessed_dir: Path
    train_cases: list  # PreprocessedCase
    val_cases: list


def prepare_plan(
    dataset_dir: Path,
    preprocessed_dir: Path | None,
    ctx: DistributedContext,
    patch_size: tuple[int, int, int] | None = None,
    workers: int = 2,
    progress: bool = True,
    configuration: str = "3d_fullres",
    target_spacing: tuple[float, float, float] | None = None,
) -> tuple[PlanConfig, Path, list[str]]:
    """Load (or on first use compute) the plan and the preprocessed cache; returns (plan, folder, case ids).

    Args:
        configuration: ``3d_fullres`` (``plan.json``), ``3d_cpu`` (``plan_cpu.json``, derived from
            ``plan.json`` with ``planner.cpu_plan`` where absent) or ``2d`` (``plan_2d.json``, derived with
            ``planner_2d.plan_2d`` where absent). All share the preprocessed cases, which are always made
            with ``plan.json``.
        target_spacing: (D, H, W) mm to plan a *new* cache at instead of the median-spacing rule (the
            spacing of an ``--init-from`` model); an existing plan is kept as it is (the caller checks it).

    Only rank 0 plans and preprocesses; the other ranks wait at a barrier and then read.
    """
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import PLAN_FILES, cpu_plan, plan_dataset
    from MaskMedCore.data.planner_2d import plan_2d
    from MaskMedCore.data.preprocessed_store import default_preprocessed_dir, preprocess_dataset
    from MaskMedCore.data.validate import validate_dataset

    dataset = load_dataset(dataset_dir)
    folder = Path(preprocessed_dir) if preprocessed_dir else default_preprocessed_dir(dataset_dir)
    plan_path = folder / PLAN_FILES["3d_fullres"]
    chosen_path = folder / PLAN_FILES[configuration]
    if ctx.is_main:
        fresh = not plan_path.is_file()
        if not fresh:
            plan = _read_plan(plan_path, patch_size)
        else:
            problems = validate_dataset(dataset, workers=workers)
            if problems:
                lines = "\n".join(f"  case {p.case_id}: {p.message}; fix: {p.fix}" for p in problems[:20])
                raise DataError(f"dataset {dataset_dir} has {len(problems)} problem(s):\n{lines}")
            folder.mkdir(parents=True, exist_ok=True)
            fingerprint = compute_fingerprint(dataset, workers=workers)
            atomic_write_text(folder / "fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
            plan = plan_dataset(dataset, fingerprint, patch_size=patch_size, target_spacing=target_spacing)
        preprocess_dataset(dataset, plan, folder, workers=workers, progress=progress)
        cpu_path = folder / PLAN_FILES["3d_cpu"]
        if fresh or (configuration == "3d_cpu" and not cpu_path.is_file()):  # a new plan.json makes it stale
            atomic_write_text(cpu_path, cpu_plan(plan, keep_patch=patch_size is not None).to_json() + "\n")
        slice_path = folder / PLAN_FILES["2d"]
        if fresh or (configuration == "2d" and not slice_path.is_file()):
            atomic_write_text(slice_path, plan_2d(plan, len(dataset.cases)).to_json() + "\n")
        if configuration in ("3d_cpu", "2d"):
            chosen_path_main = cpu_path if configuration == "3d_cpu" else slice_path
            chosen = _read_plan(chosen_path_main, None if configuration == "2d" else patch_size)
            _check_same_preprocessing(chosen, chosen_path_main, plan, plan_path)
            plan = chosen
    ctx.barrier()
    if not ctx.is_main:
        plan = PlanConfig.from_json(chosen_path.read_text(), source=str(chosen_path))
    return plan, folder, [c.case_id for c in dataset.cases]


def _read_plan(path: Path, patch_size: tuple[int, int, int] | None) -> PlanConfig:
    plan = PlanConfig.from_json(path.read_text(), source=str(path))
    if patch_size is not None and tuple(patch_size) != plan.patch_size:
        raise ConfigError(
            f"{path} was planned with patch {plan.patch_size}, not {tuple(patch_size)}; "
            "re-run 'maskmed plan' with the new patch or choose another --preprocessed folder"
        )
    return plan


def _check_same_preprocessing(plan: PlanConfig, path: Path, reference: PlanConfig, reference_path: Path) -> None:
    from MaskMedCore.data.preprocessed_store import preprocessing_key

    if preprocessing_key(plan) != preprocessing_key(reference):
        raise ConfigError(
            f"{path} differs from {reference_path} in spacing, normalisation or cropping, but the cached cases "
            f"were made with {reference_path.name}; delete {path.name} to derive it again"
        )


def config_for_splits(config: TrainingConfig, splits_file: str | Path) -> TrainingConfig:
    """``config`` with ``num_folds`` set to the length of a user-given split file.

    Raises:
        DataError: the file is not a split file.
        ConfigError: ``config.fold`` is not a fold of the file.
    """
    folds = read_splits(splits_file)
    check_fold(config.fold, folds, str(splits_file))
    return config.replace(num_folds=len(folds))


def choose_split(
    case_ids: list[str],
    run_dir: Path,
    config: TrainingConfig,
    splits_file: str | Path | None = None,
    resume: bool = False,
) -> tuple[Folds | None, list[str], list[str]]:
    """The split to train with; returns (folds to write as ``RUN/splits.json`` or None, train ids, val ids).

    The folds come from ``splits_file`` when given (checked against the dataset), else from the run's
    ``splits.json`` when it exists (a resumed run, or one prepared by the caller; kept as it is), else
    from a new seeded ``num_folds``-fold split. ``fold == -1`` trains on every case. Nothing is written.

    Raises:
        DataError: a split file is malformed or names unknown cases.
        ConfigError: ``config.fold`` or ``config.num_folds`` does not fit the split file, or a resumed
            run is given another split file than the one it started with.
    """
    split_path = run_dir / "splits.json"
    if splits_file is not None:
        folds = read_splits(splits_file)
        check_splits(folds, case_ids, str(splits_file))
        source = f"split file {splits_file}"
        same = split_path.is_file() and read_splits(split_path) == folds
        if resume and split_path.is_file() and not same:
            raise ConfigError(
                f"split file {splits_file} differs from {split_path}, the split this run started with; "
                "resume without --splits (or start a new run with another --out)"
            )
        keep = None if same else folds
    elif split_path.is_file():
        fix = "delete it to recreate"
        folds = read_splits(split_path, fix)
        check_splits(folds, case_ids, str(split_path), fix)
        source, keep = str(split_path), None
    elif config.fold == -1:
        return None, sorted(case_ids), []
    else:
        folds = make_splits(case_ids, config.num_folds, config.split_seed)
        source, keep = "the new split", folds
    if len(folds) != config.num_folds:
        raise ConfigError(
            f"{source} has {len(folds)} fold(s) but num_folds is {config.num_folds}; "
            "set num_folds to the file's length (maskmed train --splits does)"
        )
    if config.fold == -1:
        return keep, sorted(case_ids), []
    fold = folds[config.fold]
    return keep, list(fold["train"]), list(fold["val"])


def load_cases(folder: Path, case_ids: list[str]) -> list:
    """Memory-mapped ``PreprocessedCase`` items of ``case_ids``."""
    from MaskMedCore.data.preprocessed_store import load_case

    return [load_case(folder, c, mmap=True) for c in case_ids]
