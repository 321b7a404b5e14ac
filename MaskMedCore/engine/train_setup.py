"""Everything a training run needs before its first step: the dataset, its plan and preprocessed
cache (made on first use and re-used afterwards), the split, and the run folder's files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.config.training_config import TrainingConfig
from MaskMedCore.engine.distributed import DistributedContext
from MaskMedCore.engine.splits import load_or_create_splits
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
) -> tuple[PlanConfig, Path, list[str]]:
    """Load (or on first use compute) the plan and the preprocessed cache; returns (plan, folder, case ids).

    Only rank 0 plans and preprocesses; the other ranks wait at a barrier and then read.
    """
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import plan_dataset
    from MaskMedCore.data.preprocessed_store import default_preprocessed_dir, preprocess_dataset
    from MaskMedCore.data.validate import validate_dataset

    dataset = load_dataset(dataset_dir)
    folder = Path(preprocessed_dir) if preprocessed_dir else default_preprocessed_dir(dataset_dir)
    plan_path = folder / "plan.json"
    if ctx.is_main:
        if plan_path.is_file():
            plan = PlanConfig.from_json(plan_path.read_text(), source=str(plan_path))
            if patch_size is not None and tuple(patch_size) != plan.patch_size:
                raise ConfigError(
                    f"{plan_path} was planned with patch {plan.patch_size}, not {tuple(patch_size)}; "
                    "re-run 'maskmed plan' with the new patch or choose another --preprocessed folder"
                )
        else:
            problems = validate_dataset(dataset, workers=workers)
            if problems:
                lines = "\n".join(f"  case {p.case_id}: {p.message}; fix: {p.fix}" for p in problems[:20])
                raise DataError(f"dataset {dataset_dir} has {len(problems)} problem(s):\n{lines}")
            folder.mkdir(parents=True, exist_ok=True)
            fingerprint = compute_fingerprint(dataset, workers=workers)
            atomic_write_text(folder / "fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
            plan = plan_dataset(dataset, fingerprint, patch_size=patch_size)
        preprocess_dataset(dataset, plan, folder, workers=workers, progress=progress)
    ctx.barrier()
    if not ctx.is_main:
        plan = PlanConfig.from_json(plan_path.read_text(), source=str(plan_path))
    return plan, folder, [c.case_id for c in dataset.cases]


def load_split_cases(
    folder: Path, case_ids: list[str], run_dir: Path, config: TrainingConfig, ctx: DistributedContext
) -> tuple[list, list]:
    """The fold's training and validation cases (memory-mapped), with the split file kept in the run."""
    from MaskMedCore.data.preprocessed_store import load_case

    if config.fold == -1:
        train_ids, val_ids = sorted(case_ids), []
    else:
        split_path = run_dir / "splits.json"
        if ctx.is_main:
            load_or_create_splits(split_path, case_ids, config.num_folds, config.split_seed)
        ctx.barrier()
        folds = load_or_create_splits(split_path, case_ids, config.num_folds, config.split_seed)
        train_ids, val_ids = folds[config.fold]["train"], folds[config.fold]["val"]
    train = [load_case(folder, c, mmap=True) for c in train_ids]
    val = [load_case(folder, c, mmap=True) for c in val_ids]
    return train, val
