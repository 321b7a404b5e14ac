"""Case-level classification metrics: accuracy and ROC AUC.

Cases whose true label is missing (``None``) are left out of every metric here, with their
predictions or scores; so a data set may mix labelled and unlabelled cases.

ROC AUC is the Mann-Whitney statistic: the fraction of (positive, negative) case pairs in which the
positive case scores higher, a tie counting 1/2 (computed from mid-ranks, so in O(N log N)). It equals
the area under the ROC curve with linear interpolation between its points (sklearn's
``roc_auc_score``). For C > 2 classes it is the one-vs-rest macro average: the mean over classes c of
the AUC of "label == c" against ``scores[:, c]``. When a class has no positive or no negative case the
AUC is undefined and ``DataError`` (a ``ValueError``) is raised, naming the class; nothing returns nan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MaskMedCore.errors import DataError


def _labelled(y_true: Sequence, other: Sequence | np.ndarray, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(integer labels, the matching rows of ``other``) of the cases whose label is not None."""
    if len(y_true) != len(other):
        raise DataError(f"y_true has {len(y_true)} cases but {other_name} has {len(other)}; give one per case")
    keep = [i for i, y in enumerate(y_true) if y is not None]
    if not keep:
        raise DataError(f"no case has a label: all {len(y_true)} entries of y_true are None")
    labels = np.asarray([y_true[i] for i in keep])
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"y_true must hold integer class labels (or None), got values of type {labels.dtype}")
    return labels, np.asarray(other)[keep]


def accuracy(y_true: Sequence[int | None], y_pred: Sequence[int]) -> float:
    """Fraction of labelled cases whose predicted class equals the true class.

    Args:
        y_true: (N,) true class per case; ``None`` where the label is missing (case skipped).
        y_pred: (N,) predicted class per case (a ``None`` prediction of a labelled case counts as wrong).

    Returns:
        Accuracy in [0, 1] over the labelled cases.

    Raises:
        DataError: lengths differ, no case has a label, or a label is not an integer.
    """
    labels, predicted = _labelled(y_true, y_pred, "y_pred")
    return float(np.mean(labels == predicted))


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of (N,) values, tied values sharing the mean of their ranks (no scipy.stats import)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], ordered.size] - 1
    ranks = np.empty(values.size)
    ranks[order] = ((first + last) / 2 + 1)[np.cumsum(starts) - 1]
    return ranks


def _binary_auc(positive: np.ndarray, scores: np.ndarray, what: str) -> float:
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"ROC AUC of {what} is undefined: {n_pos} positive and {n_neg} negative labelled cases; "
            "it needs at least one of each"
        )
    ranks = _mid_ranks(scores)  # ties share their mid-rank: each tied pair counts 1/2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: Sequence[int | None], scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC, binary or one-vs-rest macro average (definition: module docstring).

    Args:
        y_true: (N,) true class per case, ``None`` where missing. Binary: 0/1 (or bool).
            Multi-class: 0..C-1.
        scores: (N,) score of class 1 (binary), or (N, C) score per class (one-vs-rest).

    Returns:
        AUC in [0, 1].

    Raises:
        DataError: lengths differ, no labelled case, non-finite scores, labels outside 0/1 (binary) or
            0..C-1, or a class without positive or without negative cases (AUC undefined).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim not in (1, 2) or (scores.ndim == 2 and scores.shape[1] < 2):
        raise DataError(f"scores must have shape (N,) or (N, C) with C >= 2, got {scores.shape}")
    labels, scores = _labelled(y_true, scores, "scores")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores of labelled cases contain nan or inf")
    n_classes = 2 if scores.ndim == 1 else scores.shape[1]
    outside = sorted({int(v) for v in labels if not 0 <= v < n_classes})
    if outside:
        raise DataError(
            f"y_true has labels {outside}; with scores of shape {scores.shape} labels must be 0..{n_classes - 1}"
        )
    if scores.ndim == 1:
        return _binary_auc(labels == 1, scores, "class 1")
    per_class = [_binary_auc(labels == c, scores[:, c], f"class {c} (one-vs-rest)") for c in range(n_classes)]
    return float(np.mean(per_class))
