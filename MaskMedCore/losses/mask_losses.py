"""Binary mask losses of the decoupled head and their all-pairs cost versions (MaskMed §3.5, Eq. 5-6;
Mask2Former's ``sigmoid_ce_loss``/``dice_loss`` and the matcher's batched costs).

Masks (2D or 3D) are flattened to points (every voxel or pixel, or sampled points) before these are called.
The per-pair losses keep gradients; the all-pairs costs are what the Hungarian matcher minimises.
Callers pass float32 tensors with autocast off (see ``autocast_off``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device`` (losses and matching run in float32)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support: nothing to disable
        return contextlib.nullcontext()


def sigmoid_bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE of each mask.

    Args:
        logits: (M, P) mask logits.
        targets: (M, P) targets in [0, 1].

    Returns:
        (M,) mean over points.
    """
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)


def binary_dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss of each mask, ``1 - (2 s.t + smooth) / (sum s + sum t + smooth)`` with s = sigmoid.

    Args:
        logits: (M, P) mask logits.
        targets: (M, P) targets in [0, 1].
        smooth: Mask2Former uses 1.

    Returns:
        (M,) losses in [0, 1).
    """
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(1)
    denominator = probs.sum(1) + targets.sum(1)
    return 1.0 - (numerator + smooth) / (denominator + smooth)


def pairwise_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """``sigmoid_bce_loss`` of every (prediction, target) pair.

    Uses BCE(x, t) = softplus(x) - x t, so the cost is one matrix product.

    Args:
        logits: (Q, P) mask logits.
        targets: (N, P) targets in [0, 1].

    Returns:
        (Q, N) mean BCE over points.
    """
    P = logits.shape[1]
    cost = F.softplus(logits).sum(1, keepdim=True) - torch.einsum("qp,np->qn", logits, targets)
    return cost / P


def pairwise_dice_cost(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """``binary_dice_loss`` of every (prediction, target) pair.

    Args:
        logits: (Q, P) mask logits.
        targets: (N, P) targets in [0, 1].

    Returns:
        (Q, N) Dice losses.
    """
    probs = logits.sigmoid()
    numerator = 2.0 * torch.einsum("qp,np->qn", probs, targets)
    denominator = probs.sum(1)[:, None] + targets.sum(1)[None, :]
    return 1.0 - (numerator + smooth) / (denominator + smooth)
