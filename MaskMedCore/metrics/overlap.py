"""Volume overlap: the Dice similarity coefficient per class on label maps.

Empty cases (both documented in ``MaskMedCore.metrics``): a class absent from both the prediction
and the reference scores Dice 1 (nothing to find, nothing found); a class present in exactly one of
them scores Dice 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def class_mask(label_map: np.ndarray, values: int | Iterable[int]) -> np.ndarray:
    """Binary mask of one class; a class may be a region made of several label values (nnU-Net regions).

    Args:
        label_map: (D, H, W) integer label map.
        values: the label value of the class, or the values whose union forms the region.

    Returns:
        (D, H, W) bool mask.
    """
    if isinstance(values, (int, np.integer)):
        return label_map == values
    return np.isin(label_map, np.asarray(list(values)))


def dice_score(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice = 2|P ∩ R| / (|P| + |R|) of two binary masks; 1.0 when both are empty.

    Args:
        pred_mask: (D, H, W) bool prediction.
        ref_mask: (D, H, W) bool reference, same shape.

    Returns:
        Dice in [0, 1] as a plain float.

    Raises:
        ValueError: the shapes differ.
    """
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred_mask {pred_mask.shape} and ref_mask {ref_mask.shape} must have the same shape")
    pred_mask = pred_mask.astype(bool, copy=False)
    ref_mask = ref_mask.astype(bool, copy=False)
    n_pred = int(np.count_nonzero(pred_mask))
    n_ref = int(np.count_nonzero(ref_mask))
    if n_pred + n_ref == 0:
        return 1.0
    n_both = int(np.count_nonzero(pred_mask & ref_mask))
    return 2.0 * n_both / (n_pred + n_ref)


def dice_per_class(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice of each label value in two label maps.

    Args:
        pred: (D, H, W) integer predicted label map.
        ref: (D, H, W) integer reference label map, same shape.
        labels: the label values to score (usually the foreground values).

    Returns:
        ``{label: dice}`` with plain floats.
    """
    return {int(v): dice_score(pred == v, ref == v) for v in labels}
