"""The loss of the coupled heads (MaskMed §3.1, Eq. 1-4, Fig. 1b-e; nnU-Net's ``DC_and_CE_loss``).

The heads ``pointwise``, ``mlp_cls``, ``attn_cls`` and ``attn_cls_mask`` mix query masks into
per-voxel class logits, ``sum_q M_cls[q, k] * mask_logit_q`` (``coupled_class_logits``), and are
trained like nnU-Net: per stage, voxel-wise cross-entropy plus ``1 - soft Dice`` over the
foreground classes (do_bg=False), Dice computed per image (batch_dice=False) with smoothing 1e-5,
against nearest-exact downsampled label maps. Stages are weighted as in MaskMed Eq. 6 (halving per
coarser stage, normalised to sum 1). All loss math is float32 with autocast off. Volumes and images
share the code: the Dice sums run over every axis after the class axis (D, H, W or H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.losses.common import LossResult, check_output, deep_supervision_weights
from MaskMedCore.losses.mask_losses import autocast_off
from MaskMedCore.losses.targets import downsample_labels
from MaskMedCore.models.outputs import MaskMedOutput, coupled_class_logits

TERMS = ("ce", "dice")


def soft_dice_loss(logits: Tensor, labels: Tensor, smooth: float = 1e-5) -> Tensor:
    """``1 - mean soft Dice`` over the foreground classes and the images (nnU-Net, do_bg=False).

    Per image b and class k >= 1: ``(2 sum p y + smooth) / max(sum y + sum p + smooth, 1e-8)``
    with p = softmax(logits). A class absent from an image scores ~1 when it is not predicted.

    Args:
        logits: (B, K, D, H, W) or (B, K, H, W) float32 class logits.
        labels: (B, D, H, W) or (B, H, W) int64 labels 0..K-1.
        smooth: nnU-Net's 1e-5.

    Returns:
        Scalar loss in [0, 1].
    """
    return probability_dice_loss(logits.softmax(1), labels, smooth)


def probability_dice_loss(probs: Tensor, labels: Tensor, smooth: float = 1e-5) -> Tensor:
    """:func:`soft_dice_loss` of per-voxel class probabilities ``probs`` (B, K, *S) that sum to 1 over K;
    ``labels`` (B, *S), S = (D, H, W) or (H, W)."""
    K = probs.shape[1]
    probs = probs[:, 1:]  # (B, K-1, *S), background dropped
    spatial_dims = labels.dim() - 1
    classes = torch.arange(1, K, device=labels.device).reshape(1, K - 1, *([1] * spatial_dims))
    onehot = labels[:, None] == classes  # (B, K-1, *S) bool
    spatial = tuple(range(2, 2 + spatial_dims))
    intersection = (probs * onehot).sum(spatial)  # (B, K-1)
    sum_pred = probs.sum(spatial)
    sum_gt = onehot.sum(spatial).to(probs.dtype)
    dice = (2.0 * intersection + smooth) / (sum_gt + sum_pred + smooth).clamp_min(1e-8)
    return 1.0 - dice.mean()


class CoupledCriterion(nn.Module):
    """Deep-supervised CE + soft Dice of a coupled head's per-voxel class logits.

    Args:
        num_classes: K, background included.
        deep_supervision_decay: weight ratio between consecutive stages (coarser / finer).
        dice_smooth: smoothing of the soft Dice.
    """

    def __init__(self, num_classes: int, *, deep_supervision_decay: float = 0.5, dice_smooth: float = 1e-5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.deep_supervision_decay = deep_supervision_decay
        self.dice_smooth = dice_smooth

    def forward(self, out: MaskMedOutput, labels: Tensor, generator: torch.Generator | None = None) -> LossResult:
        """Loss of one batch.

        Args:
            out: coupled network output; stage s has class logits (B, Q, K+1) (``M_cls`` with a zero
                last column) and mask logits (B, Q, D_s, H_s, W_s) or (B, Q, H_s, W_s), coarsest first.
            labels: (B, D, H, W) or (B, H, W) integer labels 0..K-1 at input resolution.
            generator: unused (the coupled loss draws nothing); accepted so both criteria share a signature.

        Returns:
            ``LossResult`` with the total and the logged terms (``indices`` is None).
        """
        labels = check_output(out, labels, self.num_classes, decoupled=False)
        n_stages = len(out.mask_logits)
        with autocast_off(labels.device):
            stage_terms = []
            for class_logits, mask_logits in zip(out.stage_class_logits, out.mask_logits, strict=True):
                logits = coupled_class_logits(class_logits.float(), mask_logits.float())  # (B, K, *S_s)
                target = downsample_labels(labels, tuple(logits.shape[2:]))  # (B, *S_s)
                stage_terms.append(
                    {"ce": F.cross_entropy(logits, target), "dice": soft_dice_loss(logits, target, self.dice_smooth)}
                )
            weights = deep_supervision_weights(n_stages, self.deep_supervision_decay)
            weighted = {t: sum(w * terms[t] for w, terms in zip(weights, stage_terms, strict=True)) for t in TERMS}
            total = sum(weighted.values())
        names = ["total", *TERMS] + [f"stage{s}/{t}" for s in range(n_stages) for t in TERMS]
        values = [total, *weighted.values()] + [terms[t] for terms in stage_terms for t in TERMS]
        logged = torch.stack([v.detach().float() for v in values]).tolist()  # one device sync
        return LossResult(total=total, terms=dict(zip(names, logged, strict=True)))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, deep_supervision_decay={self.deep_supervision_decay}, "
            f"dice_smooth={self.dice_smooth}"
        )
