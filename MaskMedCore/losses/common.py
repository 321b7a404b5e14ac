"""What both MaskMed criteria share: the typed result, the deep-supervision weights (MaskMed §3.5,
Eq. 6) and the checks of a network output against its labels, for volumes and images alike.

Deep supervision (Eq. 6): ``w_{s} = decay * w_{s+1}`` from the finest stage down, normalised to
sum 1. With the paper's decay 0.5 and 4 stages (coarsest first) that is [1, 2, 4, 8] / 15. Unlike
nnU-Net, the coarsest stage keeps its weight (nnU-Net sets it to 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from MaskMedCore.errors import DataError
from MaskMedCore.losses.matcher import MatchIndices
from MaskMedCore.losses.targets import check_label_map
from MaskMedCore.models.outputs import MaskMedOutput


@dataclass(frozen=True)
class LossResult:
    """What a criterion returns.

    Attributes:
        total: scalar float32 loss with gradient; call ``total.backward()``.
        terms: detached float values for logging. ``"total"``; the weighted contribution of each
            term summed over stages (these add up to ``total``); and the unweighted value of each
            term per stage as ``"stage{s}/{term}"`` with s = 0 the coarsest stage.
        indices: decoupled head only: the matching used at the finest stage, one
            (pred_idx, tgt_idx) pair per image; ``None`` for coupled heads.
        stage_indices: decoupled head only: the matching used at every stage, coarsest first
            (all equal to ``indices`` with matching ``"final"``); ``None`` for coupled heads.
    """

    total: Tensor
    terms: dict[str, float]
    indices: list[MatchIndices] | None = None
    stage_indices: list[list[MatchIndices]] | None = None


def deep_supervision_weights(n_stages: int, decay: float = 0.5) -> list[float]:
    """Per-stage loss weights, coarsest first, each ``decay`` times the next finer one, summing to 1.

    Args:
        n_stages: number of supervised decoder stages (1 without deep supervision).
        decay: ratio between a stage's weight and the next finer stage's, in (0, 1].

    Returns:
        ``n_stages`` floats, coarsest first; the last (finest) is the largest.
    """
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    raw = [decay ** (n_stages - 1 - s) for s in range(n_stages)]
    total = sum(raw)
    return [w / total for w in raw]


def check_output(out: MaskMedOutput, labels: Tensor, num_classes: int, decoupled: bool) -> Tensor:
    """Check that ``out`` fits this criterion and ``labels``; return the labels as int64.

    Args:
        out: the network output; mask logits (B, Q, D_s, H_s, W_s) per stage for a volume,
            (B, Q, H_s, W_s) for an image (the same for every stage).
        labels: (B, D, H, W) or (B, H, W) integer labels at input resolution, with the finest stage's
            spatial axes.
        num_classes: K of the criterion.
        decoupled: whether the criterion is the decoupled (set) one.

    Returns:
        (B, D, H, W) or (B, H, W) int64 labels.

    Raises:
        ValueError: the output does not fit the criterion (a wiring bug).
        DataError: the labels do not fit the output.
    """
    kind = "decoupled" if decoupled else "coupled"
    if out.decoupled != decoupled:
        raise ValueError(
            f"a {kind} criterion got the output of a {'decoupled' if out.decoupled else 'coupled'} head; "
            "build the criterion from the same ModelConfig as the model (build_criterion)"
        )
    n_stages = len(out.mask_logits)
    if n_stages == 0 or len(out.stage_class_logits) != n_stages:
        raise ValueError(
            f"output has {n_stages} mask stage(s) and {len(out.stage_class_logits)} class stage(s); "
            "expected the same number, at least 1"
        )
    if out.num_classes != num_classes:
        raise ValueError(
            f"class logits have {out.num_classes + 1} entries but the criterion expects K+1 = {num_classes + 1}"
        )
    mask_dim = out.mask_logits[-1].dim()
    if mask_dim not in (4, 5):
        raise ValueError(
            f"mask logits have shape {tuple(out.mask_logits[-1].shape)}; expected (B, Q, D, H, W) for a volume "
            "or (B, Q, H, W) for an image"
        )
    layout = "(B, Q, D, H, W)" if mask_dim == 5 else "(B, Q, H, W)"
    for s, (cls, masks) in enumerate(zip(out.stage_class_logits, out.mask_logits, strict=True)):
        if cls.dim() != 3 or masks.dim() != mask_dim or masks.shape[:2] != cls.shape[:2]:
            raise ValueError(
                f"stage {s}: class logits {tuple(cls.shape)} and mask logits {tuple(masks.shape)} do not fit "
                f"(B, Q, K+1) and {layout} (the finest stage's layout)"
            )
    labels = check_label_map(labels, num_classes, tuple(out.mask_logits[-1].shape[2:]))
    if labels.shape[0] != out.mask_logits[-1].shape[0]:
        raise DataError(f"labels have batch size {labels.shape[0]} but the output has {out.mask_logits[-1].shape[0]}")
    return labels
