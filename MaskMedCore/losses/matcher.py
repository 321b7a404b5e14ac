"""Hungarian matching of queries to ground-truth segments (MaskMed §3.5; Mask2Former's
``HungarianMatcher``, DETR's bipartite matching).

For each image the cost of assigning query q to segment n is::

    C[q, n] = class_weight * (-softmax(class_logits[q])[label_n])
            + bce_weight   * mean_p BCE(mask_q, target_n)
            + dice_weight  * (1 - (2 s.t + 1) / (sum s + sum t + 1)),   s = sigmoid(mask_q)

computed without gradient, in float32 with autocast off, and minimised with
``scipy.optimize.linear_sum_assignment``; min(Q, N) pairs are returned. Masks are compared on
every voxel (pixel, for 2D masks) of the prediction's grid (targets at another resolution are resized
with nearest-exact) or, with ``num_points``, on uniform random points shared by the image's
predictions and targets. Volumes (B, Q, D, H, W) and images (B, Q, H, W) share the code; the number of
spatial axes is read from the mask logits.

With a box head (issue 12) and box weights, DETR's box costs are added for the segments the box loss
supervises (``box_losses.box_target_segments``; 0 for the others)::

    C[q, n] += box_l1_weight * |box_q - box_n|_1 - box_giou_weight * GIoU(box_q, box_n)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from MaskMedCore.losses.box_losses import (
    box_target_segments,
    center_to_corners,
    pairwise_box_l1,
    pairwise_generalized_box_iou,
)
from MaskMedCore.losses.mask_losses import autocast_off, pairwise_bce_cost, pairwise_dice_cost
from MaskMedCore.losses.point_sampling import point_sample, uniform_points
from MaskMedCore.losses.targets import SegmentTargets, resize_masks

MatchIndices = tuple[Tensor, Tensor]
"""(pred_idx, tgt_idx): two (min(Q, N),) int64 CPU tensors; query pred_idx[i] is matched to segment tgt_idx[i]."""


def solve_assignment(cost: Tensor) -> MatchIndices:
    """Minimum-cost one-to-one assignment of a (Q, N) cost matrix.

    Args:
        cost: (Q, N) float costs, finite.

    Returns:
        (pred_idx, tgt_idx) int64 CPU tensors of length min(Q, N), sorted by pred_idx.

    Raises:
        FloatingPointError: the cost has NaN or inf entries (usually diverged network logits).
    """
    if cost.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone()
    array = cost.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise FloatingPointError(
            "Hungarian matching cost has NaN/inf entries; the network's class or mask logits are not finite "
            "(training diverged: lower the learning rate or check the input normalisation)"
        )
    rows, cols = linear_sum_assignment(array)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """Bipartite matching between predicted (class, mask) pairs and ground-truth segments.

    Args:
        class_weight: weight of the classification cost.
        bce_weight: weight of the sigmoid-BCE mask cost.
        dice_weight: weight of the Dice mask cost.
        num_points: ``None`` compares masks on every voxel; an int P compares them on P uniform
            random points per image.
        box_l1_weight: weight of the L1 box cost (DETR's ``cost_bbox``); used when boxes are given.
        box_giou_weight: weight of the -GIoU box cost (DETR's ``cost_giou``); used when boxes are given.
        instance_classes: ``ModelConfig.instance_classes``; selects the segments the box cost applies to.
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        bce_weight: float = 10.0,
        dice_weight: float = 10.0,
        num_points: int | None = None,
        box_l1_weight: float = 0.0,
        box_giou_weight: float = 0.0,
        instance_classes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if num_points is not None and num_points <= 0:
            raise ValueError(f"num_points must be a positive integer or None, got {num_points}")
        self.class_weight = float(class_weight)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.num_points = num_points
        self.box_l1_weight = float(box_l1_weight)
        self.box_giou_weight = float(box_giou_weight)
        self.instance_classes = tuple(int(k) for k in instance_classes)

    @torch.no_grad()
    def cost_matrices(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: Sequence[SegmentTargets],
        generator: torch.Generator | None = None,
        boxes: Tensor | None = None,
    ) -> list[Tensor]:
        """The matching cost of every image.

        Args:
            class_logits: (B, Q, K+1) logits.
            mask_logits: (B, Q, D, H, W) or (B, Q, H, W) logits.
            targets: B ``SegmentTargets`` with masks (N_b, D', H', W') or (N_b, H', W') at any resolution.
            generator: source of the random points when ``num_points`` is set.
            boxes: (B, Q, 6) predicted centre-format boxes, or None. The box costs are added when boxes
                are given, a box weight is non-zero and the targets carry boxes.

        Returns:
            B float32 costs of shape (Q, N_b).
        """
        B, Q = class_logits.shape[:2]
        if mask_logits.shape[:2] != (B, Q) or len(targets) != B:
            raise ValueError(
                f"matcher inputs disagree: class_logits {tuple(class_logits.shape)}, mask_logits "
                f"{tuple(mask_logits.shape)}, {len(targets)} targets; expected (B, Q, K+1), (B, Q, D, H, W) or "
                "(B, Q, H, W), B"
            )
        if boxes is not None and tuple(boxes.shape) != (B, Q, 6):
            raise ValueError(f"matcher boxes have shape {tuple(boxes.shape)}; expected (B, Q, 6) = {(B, Q, 6)}")
        use_boxes = boxes is not None and (self.box_l1_weight != 0.0 or self.box_giou_weight != 0.0)
        size = tuple(mask_logits.shape[2:])
        costs = []
        with autocast_off(mask_logits.device):
            for b, target in enumerate(targets):
                N = target.num_segments
                if N == 0:
                    costs.append(mask_logits.new_zeros((Q, 0), dtype=torch.float32))
                    continue
                probs = class_logits[b].float().softmax(-1)  # (Q, K+1)
                cost_class = -probs[:, target.labels.to(probs.device)]  # (Q, N)
                pred, tgt = self._flatten_masks(mask_logits[b].float(), target.masks, size, generator)
                cost = (
                    self.class_weight * cost_class
                    + self.bce_weight * pairwise_bce_cost(pred, tgt)
                    + self.dice_weight * pairwise_dice_cost(pred, tgt)
                )
                if use_boxes and target.boxes is not None:
                    cost = cost + self._box_cost(boxes[b].float(), target)
                costs.append(cost)
        return costs

    def _box_cost(self, pred: Tensor, target: SegmentTargets) -> Tensor:
        """(Q, 6) predicted boxes -> (Q, N) box cost, zero in the columns of segments without a box loss."""
        tgt = target.boxes.to(pred.device).float()  # (N, 6)
        cost = self.box_l1_weight * pairwise_box_l1(pred, tgt) - self.box_giou_weight * pairwise_generalized_box_iou(
            center_to_corners(pred), center_to_corners(tgt)
        )
        supervised = box_target_segments(target.labels.to(pred.device), self.instance_classes)  # (N,)
        return cost * supervised[None].float()

    def _flatten_masks(
        self, pred: Tensor, masks: Tensor, size: tuple[int, ...], generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """(Q, *S) logits and (N, *S') masks -> (Q, P) logits and (N, P) float32 targets; S = (D, H, W) or (H, W)."""
        masks = masks.to(pred.device)
        if self.num_points is None:
            tgt = resize_masks(masks, size).flatten(1).float()  # (N, prod S)
            return pred.flatten(1), tgt
        spatial_dims = pred.dim() - 1
        # (1, P, spatial_dims), shared by all masks
        points = uniform_points(1, self.num_points, pred.device, generator, spatial_dims)
        pred_p = point_sample(pred[None], points)[0]  # (1, Q, *S) -> (Q, P)
        tgt_p = point_sample(masks[None].float(), points)[0]  # (1, N, *S') -> (N, P)
        return pred_p, tgt_p

    @torch.no_grad()
    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: Sequence[SegmentTargets],
        generator: torch.Generator | None = None,
        boxes: Tensor | None = None,
    ) -> list[MatchIndices]:
        """Match every image of the batch.

        Args:
            class_logits: (B, Q, K+1) logits.
            mask_logits: (B, Q, D, H, W) or (B, Q, H, W) logits.
            targets: B ``SegmentTargets`` (masks at any resolution, with the logits' number of spatial axes).
            generator: source of the random points when ``num_points`` is set.
            boxes: (B, Q, 6) predicted centre-format boxes, or None (no box cost).

        Returns:
            B pairs (pred_idx, tgt_idx) of (min(Q, N_b),) int64 CPU tensors; empty for N_b = 0.
        """
        costs = self.cost_matrices(class_logits, mask_logits, targets, generator, boxes)
        return [solve_assignment(c) for c in costs]

    def extra_repr(self) -> str:
        boxes = (
            f", box_l1_weight={self.box_l1_weight}, box_giou_weight={self.box_giou_weight}"
            if self.box_l1_weight or self.box_giou_weight
            else ""
        )
        return (
            f"class_weight={self.class_weight}, bce_weight={self.bce_weight}, "
            f"dice_weight={self.dice_weight}, num_points={self.num_points}" + boxes
        )
