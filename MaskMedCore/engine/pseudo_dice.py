"""Validation during training: nnU-Net's "pseudo Dice" summed over validation patches.

True/false positives and false negatives per foreground class are accumulated over all patches
of a validation round (and over ranks), then Dice = 2TP / (2TP + FP + FN). Counting is elementwise, so
2D patches (B, H, W) and 3D patches (B, D, H, W) are scored alike. An exponential moving
average of the mean (0.9 old + 0.1 new, as nnU-Net) selects the best checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PseudoDice:
    """Args:
    num_classes: K including background (background is not scored).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(3, num_classes - 1, dtype=torch.float64, device=device)  # tp, fp, fn

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch's counts.

        Args:
            pred: (B, D, H, W) or (B, H, W) integer predicted label map.
            target: integer label map of the same shape.

        Raises:
            ValueError: the shapes differ.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pseudo-Dice: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        for k in range(1, self.num_classes):
            p, t = pred == k, target == k
            self.counts[0, k - 1] += (p & t).sum()
            self.counts[1, k - 1] += (p & ~t).sum()
            self.counts[2, k - 1] += (~p & t).sum()

    def dice(self, counts: Tensor | None = None) -> list[float | None]:
        """Dice per foreground class; None where a class never appeared in prediction or target."""
        tp, fp, fn = (counts if counts is not None else self.counts).tolist()
        return [None if (2 * a + b + c) == 0 else 2 * a / (2 * a + b + c) for a, b, c in zip(tp, fp, fn)]
