"""Case-level classification loss (issue 12): one cross-entropy per case-level task, unknown labels skipped.

``ModelConfig.case_tasks`` lists the tasks; the network's ``CaseClassificationHead`` gives one (B, C_t)
logits tensor per task and the data one (B, T) int64 target row per item, -1 where a case's label for
that task is unknown. Each task's CE is averaged over its labelled items, then the tasks that have any
are averaged, so a task labelled for few cases weighs as much as one labelled for all. Float32, no
device sync beyond the target check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from MaskMedCore.errors import DataError


def case_loss(case_logits: Sequence[Tensor], case_targets: Tensor | None) -> Tensor:
    """Mean over tasks with a labelled item of ``cross_entropy(logits_t, targets[:, t], ignore_index=-1)``.

    Args:
        case_logits: one (B, C_t) logits tensor per task (``MaskMedOutput.case_logits``).
        case_targets: (B, T) integer classes 0..C_t-1 per item and task, -1 = unknown; None = all unknown.

    Returns:
        Scalar float32 loss; a zero connected to every case logit when no item is labelled.

    Raises:
        ValueError: ``case_logits`` is empty.
        DataError: ``case_targets`` has the wrong shape, dtype or a value outside -1..C_t-1.
    """
    if not case_logits:
        raise ValueError("case_loss needs at least one task's logits")
    zero = sum(logits.float().sum() for logits in case_logits) * 0.0
    if case_targets is None:
        return zero
    B, T = case_logits[0].shape[0], len(case_logits)
    if case_targets.dim() != 2 or tuple(case_targets.shape) != (B, T):
        raise DataError(f"case_targets have shape {tuple(case_targets.shape)}; expected (B, T) = {(B, T)}")
    if case_targets.is_floating_point() or case_targets.dtype == torch.bool:
        raise DataError(f"case_targets must have an integer dtype (int64, -1 = unknown), got {case_targets.dtype}")
    device = case_logits[0].device
    targets = case_targets.to(device=device, dtype=torch.long)
    counts = torch.tensor([logits.shape[1] for logits in case_logits], device=device)  # (T,)
    if ((targets < -1) | (targets >= counts[None])).any():
        raise DataError(
            f"case_targets hold a value outside -1..C_t-1 for tasks with {counts.tolist()} classes: {targets.tolist()}"
        )
    # Per task: summed CE over labelled items / their count; tasks with none add 0 and are not counted.
    sums = torch.stack(
        [
            F.cross_entropy(logits.float(), targets[:, t], ignore_index=-1, reduction="sum")
            for t, logits in enumerate(case_logits)
        ]
    )
    labelled = (targets != -1).sum(0).float()  # (T,)
    per_task = sums / labelled.clamp_min(1.0)
    tasks = (labelled > 0).float()
    return (per_task * tasks).sum() / tasks.sum().clamp_min(1.0) + zero
