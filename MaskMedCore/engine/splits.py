"""K-fold split file (nnU-Net's ``splits_final.json``): created once, then re-used so every run and
every resumed run holds out the same cases.

The format is nnU-Net's: a JSON list with one ``{"train": [case ids], "val": [case ids]}`` object per
fold. A user-given file (``maskmed train --splits FILE``, e.g. a fixed benchmark split) is checked
with :func:`read_splits` and :func:`check_splits` and copied into the run as ``splits.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_text

Folds = list[dict[str, list[str]]]
SPLIT_KEYS = ("train", "val")


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = 12345) -> Folds:
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


def read_splits(path: str | Path, fix: str = "fix the file") -> Folds:
    """Read and check the structure of a split file (a list of ``{"train": [...], "val": [...]}``).

    Args:
        path: the JSON file.
        fix: what the error messages tell the user to do.

    Raises:
        DataError: the file is missing, not JSON, or not in nnU-Net's ``splits_final.json`` format.
    """
    path = Path(path)
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"split file {path} cannot be read ({exc.strerror or exc}); {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {path} is not valid JSON ({exc}); {fix}") from None
    expected = 'a JSON list of {"train": [case ids], "val": [case ids]}, one per fold (nnU-Net\'s splits_final.json)'
    if not isinstance(folds, list) or not folds:
        raise DataError(f"split file {path} holds {type(folds).__name__ if folds else 'no folds'}; expected {expected}")
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or set(fold) != set(SPLIT_KEYS):
            found = sorted(fold) if isinstance(fold, dict) else type(fold).__name__
            raise DataError(f"split file {path} fold {k} has {found}; expected {expected}")
        for key in SPLIT_KEYS:
            if not isinstance(fold[key], list) or not all(isinstance(c, str) for c in fold[key]):
                raise DataError(f"split file {path} fold {k} '{key}' is not a list of case ids; expected {expected}")
    return folds


def check_splits(folds: Folds, case_ids: Iterable[str], source: str, fix: str = "fix the file") -> None:
    """Every fold names only known cases, trains on at least one, and never trains on a validation case.

    Raises:
        DataError: naming the fold and the offending case ids.
    """
    known = set(case_ids)
    for k, fold in enumerate(folds):
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            example = sorted(known)[:3]
            raise DataError(
                f"split file {source} fold {k} names {len(unknown)} unknown cases (not in the dataset): "
                f"{_few(unknown)} (dataset case ids look like {example}); {fix}"
            )
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise DataError(
                f"split file {source} fold {k} has {len(both)} case(s) in both 'train' and 'val': {_few(both)}; "
                f"a validation case must not be trained on, {fix}"
            )
        if not fold["train"]:
            raise DataError(f"split file {source} fold {k} has no training cases; {fix}")


def check_fold(fold: int, folds: Folds, source: str) -> None:
    """``fold`` (-1 = every case) must index ``folds``.

    Raises:
        ConfigError: naming the split file and the folds it has.
    """
    if not -1 <= fold < len(folds):
        raise ConfigError(
            f"fold is {fold} but split file {source} has {len(folds)} fold(s); "
            f"use --fold 0..{len(folds) - 1}, or --fold all to train on every case"
        )


def load_or_create_splits(path: Path, case_ids: list[str], num_folds: int, seed: int) -> Folds:
    """Read ``path`` if it exists (checking it names only known cases), else create and write it."""
    if path.is_file():
        fix = "delete it to recreate"
        folds = read_splits(path, fix)
        check_splits(folds, case_ids, str(path), fix)
        if len(folds) != num_folds:
            raise DataError(f"split file {path} has {len(folds)} folds, expected {num_folds}; {fix}")
        return folds
    folds = make_splits(case_ids, num_folds, seed)
    write_splits(path, folds)
    return folds


def write_splits(path: Path, folds: Folds) -> None:
    atomic_write_text(path, json.dumps(folds, indent=2) + "\n")


def _few(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown}, ..." if len(ids) > limit else shown
