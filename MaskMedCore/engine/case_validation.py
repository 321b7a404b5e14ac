"""Validation during training on whole cases: sliding-window prediction of every validation case.

nnU-Net's pseudo-Dice (``pseudo_dice.py``) scores random validation *patches* and pools their voxels,
which is cheap on large scans but is neither the per-case Dice that papers and the final evaluation
report nor stable on small validation sets. ``validation="cases"`` instead predicts each preprocessed
validation case whole (Gaussian-blended tiles, no mirroring), scores Dice per case and class (a class
absent from both prediction and reference of a case is skipped, not scored 1), and reports the mean
over cases per class: the numbers a learning curve should show. On small crops such as MSD
hippocampus (one tile per case) it costs less than the patch validation.

Scored in the preprocessed grid (target spacing, cropped to non-zero), so it can differ slightly
from Dice in the original grid after export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from MaskMedCore.engine.distributed import DistributedContext


@torch.no_grad()
def validate_cases(
    predict_probs: Callable[[torch.Tensor], torch.Tensor],
    cases: Sequence,
    patch_size: Sequence[int],
    num_classes: int,
    device: torch.device,
    ctx: DistributedContext,
    *,
    overlap: float = 0.5,
) -> list[float | None]:
    """Mean over validation cases of the per-class Dice of whole-case predictions.

    Args:
        predict_probs: maps (B, C, d, h, w) tiles to (B, K, d, h, w) class probabilities, e.g.
            ``lambda x: semantic_probs(model(x))`` with the model in eval mode, deep supervision off.
        cases: ``PreprocessedCase`` items with labels; under DDP each rank predicts every
            ``world_size``-th case and the sums are all-reduced.
        patch_size: (D, H, W) tile size.
        num_classes: K including background (background is not scored).
        device: where the network runs.
        ctx: the distributed context.
        overlap: tile overlap (nnU-Net: 0.5).

    Returns:
        K-1 values: per foreground class the mean Dice over the cases where it is defined, or None
        where it is defined in no case.
    """
    from MaskMedCore.inference.cpu_batching import SLICE_TILE_BATCH
    from MaskMedCore.inference.sliding_window import sliding_window_predict

    sums = torch.zeros(2, num_classes - 1, dtype=torch.float64)  # Dice sum, case count
    for case in list(cases)[ctx.rank :: ctx.world_size]:
        image = torch.from_numpy(
            np.array(case.image, dtype=np.float32)
        )  # a copy: the case may be a read-only memory map
        probs = sliding_window_predict(
            image,
            predict_probs,
            patch_size,
            overlap=overlap,
            # One-slice tiles of a 2D plan go several at a time (as Predictor does); 3D tiles one by one.
            tile_batch_size=SLICE_TILE_BATCH if patch_size[0] == 1 else 1,
            device=device,
        )
        pred = probs.argmax(0).numpy()
        ref = np.asarray(case.labels)
        for k in range(1, num_classes):
            p, r = pred == k, ref == k
            denominator = int(p.sum()) + int(r.sum())
            if denominator:
                sums[0, k - 1] += 2.0 * int((p & r).sum()) / denominator
                sums[1, k - 1] += 1
    if ctx.enabled:
        sums = ctx.all_reduce_sum(sums)
    return [None if n == 0 else float(s / n) for s, n in zip(sums[0].tolist(), sums[1].tolist())]
