"""K-fold split file (nnU-Net's ``splits_final.json``): created once, then re-used so every run and
every resumed run holds out the same cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from MaskMedCore.errors import DataError
from MaskMedCore.io_utils import atomic_write_text


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Shuffled k-fold split: fold k validates on the k-th chunk and trains on the rest.

    With fewer cases than folds, each fold validates on one case (cases are re-used cyclically).
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise DataError(f"a train/validation split needs at least 2 cases, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    folds = []
    for k in range(num_folds):
        if len(ids) >= num_folds:
            val = shuffled[k::num_folds]
        else:
            val = [shuffled[k % len(ids)]]
        folds.append({"train": sorted(c for c in ids if c not in val), "val": sorted(val)})
    return folds


def load_or_create_splits(path: Path, case_ids: list[str], num_folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Read ``path`` if it exists (checking it names only known cases), else create and write it."""
    if path.is_file():
        try:
            folds = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"split file {path} is not valid JSON ({exc}); delete it to recreate") from None
        known = set(case_ids)
        for k, fold in enumerate(folds):
            unknown = sorted((set(fold.get("train", [])) | set(fold.get("val", []))) - known)
            if unknown:
                raise DataError(f"split file {path} fold {k} names unknown cases {unknown[:5]}; delete it to recreate")
        if len(folds) != num_folds:
            raise DataError(f"split file {path} has {len(folds)} folds, expected {num_folds}; delete it to recreate")
        return folds
    folds = make_splits(case_ids, num_folds, seed)
    atomic_write_text(path, json.dumps(folds, indent=2) + "\n")
    return folds
