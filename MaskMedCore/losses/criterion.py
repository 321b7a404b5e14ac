"""The set criterion of the decoupled head (MaskMed §3.5, Eq. 5-6; Mask2Former's ``SetCriterion``).

For every decoder stage s, with deep-supervision weight w_s (halving per coarser stage, summing
to 1)::

    L_s = class_weight * CE_{K+1}(class logits, matched labels; unmatched -> "no object")
        + bce_weight   * sum_{matched} mean BCE(mask, target) / num_masks
        + dice_weight  * sum_{matched} Dice(mask, target) / num_masks
        [+ semantic_weight * (CE + soft Dice)(composed class probabilities, labels)]
    L   = sum_s w_s * L_s

The bracketed *semantic* term is an option (``LossConfig.semantic_weight``, 0 = the paper): nnU-Net's
CE + soft Dice on the per-voxel class probabilities the decoupled head is evaluated with
(``decoupled_class_probs``: sum_q softmax(class_q) * sigmoid(mask_q), normalised over classes). The set
loss trains each query's sigmoid mask on its own, so early in training two queries can both cover a
whole structure (on MSD hippocampus the anterior and posterior masks both cover the hippocampus for
~150 iterations); the composed probabilities make the queries compete per voxel, as a softmax head's
channels do. Matching, the class term and the per-query mask terms are unchanged.

The CE is PyTorch's weighted mean over all B*Q queries with the no-object class weighted by
``no_object_weight``; ``num_masks`` is the number of ground-truth segments in the batch (optionally
all-reduced across ranks, then clamped to >= 1). With matching ``"final"`` (the paper) the
Hungarian matching runs once on the finest stage and its indices are reused at every stage; with
``"per_stage"`` (Mask2Former's aux losses; needed for per-stage queries) each stage is matched on
its own. Masks are compared densely at each stage's resolution against nearest-exact
downsampled targets, or on PointRend importance-sampled points read from the full-resolution
targets. All loss math is float32 with autocast off.

Images and volumes share the code: a 2D network's mask logits are (B, Q, H_s, W_s) and its labels
(B, H, W); the number of spatial axes is read from the tensors. The box and case terms are 3D-only
(``ModelConfig`` rejects a box head and case tasks for 2D), so a 2D criterion has their weights at 0.

Multi-task terms (issue 12), each present only when its weight is > 0:

- ``box_l1`` and ``box_giou`` (DETR §3.1 / its ``SetCriterion.loss_boxes``), per stage on ``stage_boxes``
  with the deep-supervision weights: ``sum |box - target|_1 / num_boxes`` and
  ``sum (1 - GIoU) / num_boxes`` over the matched pairs whose segment is a box target
  (``box_losses.box_target_segments``: the instance classes' segments, or every foreground segment when
  there are no instance classes); ``num_boxes`` counts the batch's box targets (reduced like
  ``num_masks``, clamped >= 1). The matcher then also gets DETR's box costs, with the same weights.
- ``case``: the mean over case-level tasks with at least one labelled item of
  ``cross_entropy(case_logits_t, case_targets[:, t], ignore_index=-1)``; final output only, no deep
  supervision; a graph-connected zero when nothing is labelled.

With class, BCE and Dice weights all 0 (a classification-only baseline) no targets are built, nothing
is matched and the set terms are left out; the indices are then empty. Outputs no term reads are added
times 0, so every parameter stays in the graph (DDP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.config.loss_config import MATCHING_MODES
from MaskMedCore.losses.box_losses import box_target_segments, matched_box_losses
from MaskMedCore.losses.case_loss import case_loss
from MaskMedCore.losses.common import LossResult, check_output, deep_supervision_weights
from MaskMedCore.losses.coupled_loss import probability_dice_loss
from MaskMedCore.losses.mask_losses import autocast_off, binary_dice_loss, sigmoid_bce_loss
from MaskMedCore.losses.matcher import HungarianMatcher, MatchIndices
from MaskMedCore.losses.point_sampling import importance_points, point_sample
from MaskMedCore.losses.targets import SegmentTargets, build_targets, downsample_labels, resize_masks
from MaskMedCore.models.outputs import MaskMedOutput, decoupled_class_probs

TERMS = ("class", "bce", "dice")
SEMANTIC = "semantic"
BOX_TERMS = ("box_l1", "box_giou")
CASE = "case"


class SetCriterion(nn.Module):
    """Hungarian-matched class + mask loss of the decoupled head, deep-supervised over stages.

    Args:
        num_classes: K, background included (the classifier has K+1 outputs).
        class_weight: weight of the K+1-way cross-entropy.
        bce_weight: weight of the matched masks' sigmoid BCE.
        dice_weight: weight of the matched masks' Dice loss.
        no_object_weight: CE weight of the no-object class.
        matcher_num_points: ``None``: match on every voxel; int: on that many uniform points per image.
        loss_num_points: ``None``: dense mask loss; int: that many importance-sampled points per mask.
        oversample_ratio: importance sampling's candidate factor k.
        importance_sample_ratio: importance sampling's uncertain fraction beta.
        matching: ``"final"`` or ``"per_stage"``.
        deep_supervision_decay: weight ratio between consecutive stages (coarser / finer).
        semantic_weight: weight of the optional CE + soft Dice on the composed class probabilities (0: off).
        instance_classes: ``ModelConfig.instance_classes``: label values whose connected components are
            separate segments (and the box targets when boxes are on).
        box_l1_weight: weight of the L1 box loss and matching cost (0: off; needs ``out.stage_boxes``).
        box_giou_weight: weight of the 1 - GIoU box loss and -GIoU matching cost (0: off).
        case_weight: weight of the case-level classification loss (0: off; needs ``out.case_logits``).
        reduce_num_masks: optional hook applied to the (scalar float) segment and box counts before
            clamping, e.g. an all-reduce divided by the world size under DDP.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float = 2.0,
        bce_weight: float = 10.0,
        dice_weight: float = 10.0,
        no_object_weight: float = 0.1,
        matcher_num_points: int | None = None,
        loss_num_points: int | None = None,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        matching: str = "final",
        deep_supervision_decay: float = 0.5,
        semantic_weight: float = 0.0,
        instance_classes: Sequence[int] = (),
        box_l1_weight: float = 0.0,
        box_giou_weight: float = 0.0,
        case_weight: float = 0.0,
        reduce_num_masks: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if matching not in MATCHING_MODES:
            raise ValueError(f"matching is {matching!r}; expected one of {MATCHING_MODES}")
        self.num_classes = num_classes
        self.instance_classes = tuple(int(k) for k in instance_classes)
        # Matching needs a set loss; without one the model is a classification-only baseline.
        self.matched = class_weight + bce_weight + dice_weight > 0
        boxes = box_l1_weight > 0 or box_giou_weight > 0
        if not self.matched and (boxes or case_weight <= 0):
            raise ValueError(
                "class_weight, bce_weight and dice_weight are all 0, which only a classification-only criterion "
                f"allows (case_weight > 0 and no box terms); got case_weight={case_weight}, "
                f"box_l1_weight={box_l1_weight}, box_giou_weight={box_giou_weight}"
            )
        self.weights: dict[str, float] = {}
        if self.matched:
            self.weights.update({"class": float(class_weight), "bce": float(bce_weight), "dice": float(dice_weight)})
        if semantic_weight > 0:
            self.weights[SEMANTIC] = float(semantic_weight)
        for name, weight in zip(BOX_TERMS, (box_l1_weight, box_giou_weight), strict=True):
            if weight > 0:
                self.weights[name] = float(weight)
        if case_weight > 0:
            self.weights[CASE] = float(case_weight)
        self.terms = tuple(self.weights)
        self.stage_terms = tuple(t for t in self.terms if t != CASE)
        """The deep-supervised terms (every one but ``case``), logged per stage."""
        self.uses_boxes = boxes
        self.matcher = HungarianMatcher(
            class_weight,
            bce_weight,
            dice_weight,
            matcher_num_points,
            box_l1_weight=box_l1_weight,
            box_giou_weight=box_giou_weight,
            instance_classes=self.instance_classes,
        )
        self.loss_num_points = loss_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matching = matching
        self.deep_supervision_decay = deep_supervision_decay
        self.reduce_num_masks = reduce_num_masks
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(
        self,
        out: MaskMedOutput,
        labels: Tensor,
        generator: torch.Generator | None = None,
        case_targets: Tensor | None = None,
    ) -> LossResult:
        """Loss of one batch.

        Args:
            out: decoupled network output; stage s has class logits (B, Q_s, K+1) and mask logits
                (B, Q_s, D_s, H_s, W_s) (volumes) or (B, Q_s, H_s, W_s) (images), coarsest first, the last
                at input resolution; with box terms also ``stage_boxes`` (B, Q_s, 6), with the case term
                ``case_logits`` (B, C_t) per task (both volumes only).
            labels: (B, D, H, W) or (B, H, W) integer labels 0..K-1 at input resolution.
            generator: source of randomness for point sampling (matcher and loss).
            case_targets: (B, T) int64 case-level class per item and task, -1 = unknown; None = all unknown.

        Returns:
            ``LossResult`` with the total, the logged terms and the matching indices.

        Raises:
            ValueError: the output lacks the boxes or case logits this criterion's weights need.
            DataError: the labels or case targets do not fit the output.
        """
        labels = check_output(out, labels, self.num_classes, decoupled=True)
        self._check_task_outputs(out)
        n_stages = len(out.mask_logits)
        device = out.mask_logits[-1].device
        with autocast_off(device):
            if self.matched:
                # Full-resolution targets serve every stage: dense comparisons resize them to the stage's
                # grid with nearest-exact (= nnU-Net's downsampled label maps), points read them directly.
                targets = build_targets(labels, self.instance_classes, with_boxes=self.uses_boxes)
                num_masks = self._count(torch.tensor(float(sum(t.num_segments for t in targets)), device=device))
                stage_indices = self._match(out, targets, generator)
                stage_terms = [
                    self._stage_losses(cls, masks, targets, idx, num_masks, generator)
                    for cls, masks, idx in zip(out.stage_class_logits, out.mask_logits, stage_indices, strict=True)
                ]
                if self.uses_boxes:
                    assert out.stage_boxes is not None  # _check_task_outputs
                    num_boxes = self._count(self._box_target_count(targets, device))
                    for boxes, idx, terms in zip(out.stage_boxes, stage_indices, stage_terms, strict=True):
                        terms.update(matched_box_losses(boxes, targets, idx, num_boxes, self.instance_classes))
            else:
                empty = torch.empty(0, dtype=torch.int64)
                stage_indices = [[(empty, empty)] * labels.shape[0] for _ in range(n_stages)]
                stage_terms = [{} for _ in range(n_stages)]
            weights = deep_supervision_weights(n_stages, self.deep_supervision_decay)
            if SEMANTIC in self.weights:
                for cls, masks, terms in zip(out.stage_class_logits, out.mask_logits, stage_terms, strict=True):
                    terms[SEMANTIC] = semantic_loss(cls, masks, labels)
            weighted = {
                t: sum(w * self.weights[t] * terms[t] for w, terms in zip(weights, stage_terms, strict=True))
                for t in self.stage_terms
            }
            if CASE in self.weights:
                weighted[CASE] = self.weights[CASE] * case_loss(out.case_logits, case_targets)
            total = sum(weighted.values())
            unused = self._unused_outputs(out)
            if unused:
                total = total + sum(t.float().sum() for t in unused) * 0.0
        names = ["total", *weighted] + [f"stage{s}/{t}" for s in range(n_stages) for t in self.stage_terms]
        values = [total, *weighted.values()] + [terms[t] for terms in stage_terms for t in self.stage_terms]
        logged = torch.stack([v.detach().float() for v in values]).tolist()  # one device sync
        return LossResult(
            total=total,
            terms=dict(zip(names, logged, strict=True)),
            indices=stage_indices[-1],
            stage_indices=stage_indices,
        )

    # ------------------------------------------------------------------ pieces
    def _check_task_outputs(self, out: MaskMedOutput) -> None:
        """Raise ValueError when the box or case terms are on but the output lacks what they read, or is 2D."""
        n_stages = len(out.mask_logits)
        task_terms = [t for t in (*BOX_TERMS, CASE) if t in self.weights]
        if task_terms and out.mask_logits[-1].dim() != 5:
            raise ValueError(
                f"the criterion has the 3D-only term(s) {task_terms} but the output's mask logits are "
                f"{tuple(out.mask_logits[-1].shape)}, not (B, Q, D, H, W); box heads and case tasks are 3D-only "
                "(build the criterion from the model's ModelConfig with build_criterion)"
            )
        if self.uses_boxes:
            boxes = out.stage_boxes
            if boxes is None or len(boxes) != n_stages:
                found = "none" if boxes is None else f"{len(boxes)} stage(s)"
                raise ValueError(
                    f"the criterion has box terms but the output has {found} of boxes for {n_stages} mask stage(s); "
                    "build the model with box_head=True, or the criterion from the same ModelConfig (build_criterion)"
                )
            for s, (b, m) in enumerate(zip(boxes, out.mask_logits, strict=True)):
                if b.dim() != 3 or b.shape != (*m.shape[:2], 6):
                    raise ValueError(f"stage {s}: boxes {tuple(b.shape)} do not fit (B, Q, 6) = {(*m.shape[:2], 6)}")
        if CASE in self.weights and not out.case_logits:
            raise ValueError(
                "the criterion has a case term but the output has no case logits; build the model with case_tasks, "
                "or the criterion from the same ModelConfig (build_criterion)"
            )

    def _unused_outputs(self, out: MaskMedOutput) -> list[Tensor]:
        """Outputs no term reads (boxes with box weights 0, case logits with case weight 0, every set output of
        a classification-only criterion). The loss adds them times 0 so each parameter still gets a (zero)
        gradient: DDP without ``find_unused_parameters`` fails on parameters outside the graph."""
        unused: list[Tensor] = []
        if not self.matched and SEMANTIC not in self.weights:
            unused += [*out.stage_class_logits, *out.mask_logits]
        if not self.uses_boxes and out.stage_boxes is not None:
            unused += out.stage_boxes
        if CASE not in self.weights:
            unused += list(out.case_logits)
        return unused

    def _count(self, count: Tensor) -> Tensor:
        """A batch's (scalar float) segment or box count, reduced across ranks, clamped >= 1."""
        if self.reduce_num_masks is not None:
            count = self.reduce_num_masks(count)
        return count.clamp_min(1.0)

    def _box_target_count(self, targets: Sequence[SegmentTargets], device: torch.device) -> Tensor:
        """Number of segments the box loss supervises in the batch, as a float tensor (no device sync)."""
        per_image = [box_target_segments(t.labels.to(device), self.instance_classes).sum() for t in targets]
        return torch.stack(per_image).sum().float()

    def _match(
        self, out: MaskMedOutput, targets: list[SegmentTargets], generator: torch.Generator | None
    ) -> list[list[MatchIndices]]:
        """Matching indices per stage, coarsest first."""
        n_stages = len(out.mask_logits)
        boxes = out.stage_boxes if self.uses_boxes else None
        stage_boxes = [None] * n_stages if boxes is None else boxes
        if self.matching == "per_stage":
            return [
                self.matcher(cls, masks, targets, generator, boxes=b)
                for cls, masks, b in zip(out.stage_class_logits, out.mask_logits, stage_boxes, strict=True)
            ]
        queries = {m.shape[1] for m in out.mask_logits}
        if len(queries) > 1:
            raise ValueError(
                f"matching 'final' reuses the finest stage's indices, but the stages have different query counts "
                f"{[m.shape[1] for m in out.mask_logits]}; use matching 'per_stage'"
            )
        final = self.matcher(out.stage_class_logits[-1], out.mask_logits[-1], targets, generator, boxes=stage_boxes[-1])
        return [final] * n_stages

    def _stage_losses(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: Sequence[SegmentTargets],
        indices: Sequence[MatchIndices],
        num_masks: Tensor,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        """Unweighted class, BCE and Dice terms of one stage (scalars with gradient)."""
        device = mask_logits.device
        batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(indices)]).to(device)
        pred_idx = torch.cat([p for p, _ in indices]).to(device)

        # Class term: every query, unmatched ones target "no object" (index K).
        B, Q = class_logits.shape[:2]
        target_classes = torch.full((B, Q), self.num_classes, dtype=torch.long, device=device)
        matched_labels = torch.cat(
            [t.labels.to(device)[j.to(device)] for t, (_, j) in zip(targets, indices, strict=True)]
        )
        target_classes[batch_idx, pred_idx] = matched_labels
        # (B, Q, K+1) -> (B, K+1, Q): cross_entropy wants classes on dim 1.
        loss_class = F.cross_entropy(
            class_logits.float().transpose(1, 2), target_classes, weight=self.empty_weight.float()
        )

        # Mask terms: matched pairs only.
        if pred_idx.numel() == 0:
            zero = mask_logits.float().sum() * 0.0  # keeps the graph connected
            return {"class": loss_class, "bce": zero, "dice": zero}
        pred = mask_logits[batch_idx, pred_idx].float()  # (M, *S_s), S_s = (D_s, H_s, W_s) or (H_s, W_s)
        tgt = torch.cat(
            [t.masks.to(device)[j.to(device)] for t, (_, j) in zip(targets, indices, strict=True)]
        )  # (M, *S'), the targets' own resolution
        if self.loss_num_points is None:
            pred_flat = pred.flatten(1)  # (M, V)
            tgt_flat = resize_masks(tgt, tuple(pred.shape[1:])).flatten(1).float()
        else:
            points = importance_points(  # (M, P, 3) for volumes, (M, P, 2) for images
                pred[:, None], self.loss_num_points, self.oversample_ratio, self.importance_sample_ratio, generator
            )
            pred_flat = point_sample(pred[:, None], points)[:, 0]  # (M, 1, P) -> (M, P)
            tgt_flat = point_sample(tgt[:, None].float(), points)[:, 0]
        return {
            "class": loss_class,
            "bce": sigmoid_bce_loss(pred_flat, tgt_flat).sum() / num_masks,
            "dice": binary_dice_loss(pred_flat, tgt_flat).sum() / num_masks,
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weights={self.weights}, matching={self.matching!r}, "
            f"loss_num_points={self.loss_num_points}, deep_supervision_decay={self.deep_supervision_decay}"
            + (f", instance_classes={self.instance_classes}" if self.instance_classes else "")
        )


def semantic_loss(class_logits: Tensor, mask_logits: Tensor, labels: Tensor) -> Tensor:
    """CE + soft Dice (nnU-Net's, foreground classes) of the decoupled head's composed class probabilities.

    Args:
        class_logits: (B, Q, K+1) one stage's class logits.
        mask_logits: (B, Q, D_s, H_s, W_s) or (B, Q, H_s, W_s) that stage's mask logits.
        labels: (B, D, H, W) or (B, H, W) int64 labels at input resolution (downsampled nearest-exact to the
            stage).

    Returns:
        Scalar loss.
    """
    probs = decoupled_class_probs(class_logits.float(), mask_logits.float())  # (B, K, *S_s)
    target = downsample_labels(labels, tuple(probs.shape[2:]))
    ce = F.nll_loss(probs.clamp_min(1e-6).log(), target)
    return ce + probability_dice_loss(probs, target)
