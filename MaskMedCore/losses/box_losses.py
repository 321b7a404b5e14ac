"""3D box format, IoU / generalized IoU and L1 for the box head (issue 12; DETR §3.1 and its ``box_ops``,
Rezatofighi et al. 2019 "Generalized Intersection over Union" §3, written for 3D boxes).

Boxes come in two layouts, both in array order and as fractions of the patch's (D, H, W):

- *centre*: ``(cz, cy, cx, d, h, w)``, what the box head predicts (sigmoid outputs) and the targets carry;
- *corners*: ``(z0, y0, x0, z1, y1, x1)``, what IoU and GIoU take (as DETR's ``generalized_box_iou``).

``boxes_from_masks`` puts a box around whole voxels: a mask covering voxel indices i0..i1 along an axis of
size S has centre ``(i0 + i1 + 1) / 2 / S`` and extent ``(i1 - i0 + 1) / S``, i.e. from the outer edge of
voxel i0 to the outer edge of voxel i1 (the voxel-centre convention of ``align_corners=False``).
Everything here is float32; the pairwise versions are what the Hungarian matcher uses, the elementwise
ones the loss on matched pairs (``matched_box_losses``). Which segments get a box loss is decided in one
place, ``box_target_segments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # targets.py imports this module for boxes_from_masks
    from MaskMedCore.losses.matcher import MatchIndices
    from MaskMedCore.losses.targets import SegmentTargets

_EPS = 1e-7
"""Lower bound of the union and enclosing volumes, so zero-volume boxes give 0 instead of NaN."""


def _check_boxes(name: str, boxes: Tensor) -> None:
    if boxes.dim() < 1 or boxes.shape[-1] != 6:
        raise ValueError(f"{name} must have shape (..., 6), got {tuple(boxes.shape)}")


def center_to_corners(boxes: Tensor) -> Tensor:
    """``(cz, cy, cx, d, h, w)`` -> ``(z0, y0, x0, z1, y1, x1)``.

    Args:
        boxes: (..., 6) centre-format boxes.

    Returns:
        (..., 6) corner-format boxes.
    """
    _check_boxes("boxes", boxes)
    centre, size = boxes[..., :3], boxes[..., 3:]
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)


def corners_to_center(corners: Tensor) -> Tensor:
    """``(z0, y0, x0, z1, y1, x1)`` -> ``(cz, cy, cx, d, h, w)``.

    Args:
        corners: (..., 6) corner-format boxes.

    Returns:
        (..., 6) centre-format boxes.
    """
    _check_boxes("corners", corners)
    low, high = corners[..., :3], corners[..., 3:]
    return torch.cat([0.5 * (low + high), high - low], dim=-1)


def box_volume(corners: Tensor) -> Tensor:
    """(..., 6) corner boxes -> (...) volumes (0 for inverted boxes)."""
    return (corners[..., 3:] - corners[..., :3]).clamp_min(0).prod(-1)


def _iou_parts(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """IoU, union and enclosing-box volume of broadcastable corner boxes ``a`` and ``b`` (..., 6)."""
    inter = (torch.minimum(a[..., 3:], b[..., 3:]) - torch.maximum(a[..., :3], b[..., :3])).clamp_min(0).prod(-1)
    union = (box_volume(a) + box_volume(b) - inter).clamp_min(_EPS)
    enclosing = (torch.maximum(a[..., 3:], b[..., 3:]) - torch.minimum(a[..., :3], b[..., :3])).prod(-1)
    return inter / union, union, enclosing.clamp_min(_EPS)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired corner boxes.

    Args:
        a: (N, 6) corner boxes.
        b: (N, 6) corner boxes.

    Returns:
        (N,) IoU in [0, 1].
    """
    _check_pairs(a, b)
    return _iou_parts(a, b)[0]


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Generalized IoU of paired corner boxes, ``IoU - (|C| - |A u B|) / |C|`` with C the enclosing box.

    Args:
        a: (N, 6) corner boxes.
        b: (N, 6) corner boxes.

    Returns:
        (N,) GIoU in (-1, 1]; 1 for identical boxes, negative for disjoint ones.
    """
    _check_pairs(a, b)
    iou, union, enclosing = _iou_parts(a, b)
    return iou - (enclosing - union) / enclosing


def pairwise_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair of corner boxes.

    Args:
        a: (N, 6) corner boxes.
        b: (M, 6) corner boxes.

    Returns:
        (N, M) IoU.
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    return _iou_parts(a[:, None], b[None])[0]


def pairwise_generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Generalized IoU of every pair of corner boxes (DETR's matching cost is its negative).

    Args:
        a: (N, 6) corner boxes.
        b: (M, 6) corner boxes.

    Returns:
        (N, M) GIoU.
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    iou, union, enclosing = _iou_parts(a[:, None], b[None])
    return iou - (enclosing - union) / enclosing


def box_l1(a: Tensor, b: Tensor) -> Tensor:
    """L1 distance of paired boxes (any one layout), summed over the 6 coordinates.

    Args:
        a: (N, 6) boxes.
        b: (N, 6) boxes.

    Returns:
        (N,) L1 distances.
    """
    _check_pairs(a, b)
    return (a - b).abs().sum(-1)


def pairwise_box_l1(a: Tensor, b: Tensor) -> Tensor:
    """L1 distance of every pair of boxes (DETR's ``cost_bbox``, ``torch.cdist(p=1)``).

    Args:
        a: (N, 6) boxes.
        b: (M, 6) boxes.

    Returns:
        (N, M) L1 distances.
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    return torch.cdist(a, b, p=1)


def boxes_from_masks(masks: Tensor) -> Tensor:
    """The whole-voxel bounding box of each mask, centre format, as fractions of the mask's (D, H, W).

    Args:
        masks: (N, D, H, W) bool masks.

    Returns:
        (N, 6) float32 ``(cz, cy, cx, d, h, w)`` on the masks' device; all zeros for an empty mask.
    """
    if masks.dim() != 4:
        raise ValueError(f"masks must have shape (N, D, H, W), got {tuple(masks.shape)}")
    masks = masks.bool()
    N, D, H, W = masks.shape
    centres, sizes = [], []
    for axis, size in zip((1, 2, 3), (D, H, W), strict=True):
        others = tuple(a for a in (1, 2, 3) if a != axis)
        hit = masks.any(dim=others)  # (N, S): does the mask reach this slice?
        index = torch.arange(size, device=masks.device)
        low = torch.where(hit, index, size).amin(1)  # (N,)
        high = torch.where(hit, index, -1).amax(1)
        centres.append((low + high + 1).float() / (2 * size))
        sizes.append((high - low + 1).float() / size)
    boxes = torch.stack(centres + sizes, dim=1)  # (N, 6)
    empty = ~masks.flatten(1).any(1)
    return boxes.masked_fill(empty[:, None], 0.0)


def box_target_segments(labels: Tensor, instance_classes: Sequence[int] = ()) -> Tensor:
    """Which segments the box terms supervise: the instance classes' segments when there are instance
    classes, otherwise every foreground segment (label != 0).

    Args:
        labels: (N,) int64 segment class ids (``SegmentTargets.labels``).
        instance_classes: ``ModelConfig.instance_classes``.

    Returns:
        (N,) bool.
    """
    if instance_classes:
        return torch.isin(labels, torch.tensor(list(instance_classes), dtype=labels.dtype, device=labels.device))
    return labels != 0


def matched_box_losses(
    boxes: Tensor,
    targets: Sequence[SegmentTargets],
    indices: Sequence[MatchIndices],
    num_boxes: Tensor,
    instance_classes: Sequence[int] = (),
) -> dict[str, Tensor]:
    """Unweighted ``box_l1`` and ``box_giou`` of one decoder stage (DETR's ``loss_boxes``).

    ``sum |box - target|_1 / num_boxes`` and ``sum (1 - GIoU) / num_boxes`` over the matched pairs whose
    segment is a box target (``box_target_segments``).

    Args:
        boxes: (B, Q, 6) the stage's predicted centre-format boxes.
        targets: B ``SegmentTargets`` with boxes.
        indices: B (pred_idx, tgt_idx) matches.
        num_boxes: scalar tensor, the batch's box-target count (>= 1).
        instance_classes: ``ModelConfig.instance_classes``.

    Returns:
        ``{"box_l1": scalar, "box_giou": scalar}`` float32 with gradient (0 when nothing is supervised).
    """
    device = boxes.device
    batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(indices)]).to(device)
    pred_idx = torch.cat([p for p, _ in indices]).to(device)
    pred = boxes[batch_idx, pred_idx].float()  # (M, 6)
    tgt = torch.cat([t.boxes.to(device)[j.to(device)] for t, (_, j) in zip(targets, indices, strict=True)]).float()
    labels = torch.cat([t.labels.to(device)[j.to(device)] for t, (_, j) in zip(targets, indices, strict=True)])
    # A 0/1 weight instead of boolean indexing: no device sync, and an empty selection stays in the graph.
    supervised = box_target_segments(labels, instance_classes).float()  # (M,)
    giou = generalized_box_iou(center_to_corners(pred), center_to_corners(tgt))
    return {
        "box_l1": (box_l1(pred, tgt) * supervised).sum() / num_boxes,
        "box_giou": ((1.0 - giou) * supervised).sum() / num_boxes,
    }


def _check_pairs(a: Tensor, b: Tensor) -> None:
    _check_boxes("a", a)
    _check_boxes("b", b)
    if a.shape != b.shape:
        raise ValueError(f"paired boxes need equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")


__all__ = [
    "center_to_corners",
    "corners_to_center",
    "box_volume",
    "box_iou",
    "generalized_box_iou",
    "pairwise_box_iou",
    "pairwise_generalized_box_iou",
    "box_l1",
    "pairwise_box_l1",
    "boxes_from_masks",
    "box_target_segments",
    "matched_box_losses",
]
