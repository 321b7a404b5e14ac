"""3D box helpers of the box head (issue 12): format conversions, IoU / GIoU against hand-computed values,
pairwise == elementwise, whole-voxel boxes of masks, and gradients."""

from __future__ import annotations

import pytest
import torch

from MaskMedCore.losses.box_losses import (
    box_iou,
    box_l1,
    box_target_segments,
    box_volume,
    boxes_from_masks,
    center_to_corners,
    corners_to_center,
    generalized_box_iou,
    pairwise_box_iou,
    pairwise_box_l1,
    pairwise_generalized_box_iou,
)

UNIT = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]

# (a, b, IoU, GIoU) in corner format, each worked out by hand:
HAND = [
    pytest.param(UNIT, UNIT, 1.0, 1.0, id="identical"),
    # b inside a: inter 1, union 8, enclosing = a (8): GIoU = IoU = 1/8.
    pytest.param([0, 0, 0, 2, 2, 2], UNIT, 1 / 8, 1 / 8, id="nested"),
    # Side by side with a gap of 1 along z: inter 0, union 2, enclosing 3 x 1 x 1: GIoU = -(3 - 2) / 3.
    pytest.param(UNIT, [2, 0, 0, 3, 1, 1], 0.0, -1 / 3, id="disjoint-gap"),
    # Touching at one corner: inter 0, union 2, enclosing 2^3 = 8: GIoU = -(8 - 2) / 8.
    pytest.param(UNIT, [1, 1, 1, 2, 2, 2], 0.0, -0.75, id="disjoint-corner"),
    # Overlap in a unit cube: inter 1, union 8 + 8 - 1 = 15, enclosing 3^3 = 27: GIoU = 1/15 - 12/27 = -17/45.
    pytest.param([0, 0, 0, 2, 2, 2], [1, 1, 1, 3, 3, 3], 1 / 15, -17 / 45, id="partial"),
    # Anisotropic: a = 1 x 2 x 4 (8), b = 1 x 1 x 2 at the x end of a: inter 2, union 8, enclosing 8.
    pytest.param([0, 0, 0, 1, 2, 4], [0, 1, 2, 1, 2, 4], 2 / 8, 2 / 8, id="anisotropic-nested"),
]


@pytest.mark.parametrize(("a", "b", "iou", "giou"), HAND)
def test_iou_and_giou_match_hand_computed_values(a, b, iou, giou):
    a, b = torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)
    assert box_iou(a, b).item() == pytest.approx(iou, abs=1e-6)
    assert generalized_box_iou(a, b).item() == pytest.approx(giou, abs=1e-6)
    # Symmetric.
    assert generalized_box_iou(b, a).item() == pytest.approx(giou, abs=1e-6)


def test_disjoint_giou_is_negative_and_decreases_with_distance():
    a = torch.tensor([UNIT])
    gious = [generalized_box_iou(a, torch.tensor([[g, 0, 0, g + 1, 1, 1]])).item() for g in (1.0, 2.0, 4.0)]
    assert all(v <= 0 for v in gious) and gious[0] > gious[1] > gious[2]
    assert gious[2] == pytest.approx(-(5 - 2) / 5)


def test_centre_and_corner_formats_round_trip():
    centre = torch.tensor([[0.5, 0.25, 0.75, 0.2, 0.5, 0.1]])
    corners = center_to_corners(centre)
    assert torch.allclose(corners, torch.tensor([[0.4, 0.0, 0.7, 0.6, 0.5, 0.8]]))
    assert torch.allclose(corners_to_center(corners), centre)
    assert box_volume(corners).item() == pytest.approx(0.2 * 0.5 * 0.1)


def test_pairwise_equals_elementwise():
    g = torch.Generator().manual_seed(0)
    a = center_to_corners(torch.rand(4, 6, generator=g))
    b = center_to_corners(torch.rand(3, 6, generator=g))
    iou, giou, l1 = pairwise_box_iou(a, b), pairwise_generalized_box_iou(a, b), pairwise_box_l1(a, b)
    assert iou.shape == giou.shape == l1.shape == (4, 3)
    ii, jj = torch.meshgrid(torch.arange(4), torch.arange(3), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    assert torch.allclose(iou.flatten(), box_iou(a[ii], b[jj]), atol=1e-6)
    assert torch.allclose(giou.flatten(), generalized_box_iou(a[ii], b[jj]), atol=1e-6)
    assert torch.allclose(l1.flatten(), box_l1(a[ii], b[jj]), atol=1e-5)
    assert (giou <= iou + 1e-6).all() and (giou >= -1).all()


def test_boxes_from_masks_cover_whole_voxels():
    masks = torch.zeros(3, 8, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9, :] = True  # z 2..4, y 3..8, x 0..11
    masks[1, 7, 9, 11] = True  # the last voxel
    boxes = boxes_from_masks(masks)  # masks[2] stays empty
    assert boxes.dtype == torch.float32 and boxes.shape == (3, 6)
    # centre (min + max + 1) / 2 / size, extent (max - min + 1) / size
    expected0 = [(2 + 4 + 1) / 2 / 8, (3 + 8 + 1) / 2 / 10, (0 + 11 + 1) / 2 / 12, 3 / 8, 6 / 10, 12 / 12]
    expected1 = [7.5 / 8, 9.5 / 10, 11.5 / 12, 1 / 8, 1 / 10, 1 / 12]
    assert boxes[0].tolist() == pytest.approx(expected0)
    assert boxes[1].tolist() == pytest.approx(expected1)
    assert boxes[2].tolist() == [0.0] * 6
    # The corner box spans exactly the voxels' outer edges.
    assert center_to_corners(boxes[:1]).tolist()[0] == pytest.approx([2 / 8, 3 / 10, 0.0, 5 / 8, 9 / 10, 1.0])


def test_giou_gives_a_gradient_where_iou_does_not():
    target = torch.tensor([UNIT])
    pred = torch.tensor([[2.0, 0.0, 0.0, 3.0, 1.0, 1.0]], requires_grad=True)  # disjoint
    box_iou(pred, target).sum().backward()
    assert torch.count_nonzero(pred.grad) == 0
    pred.grad = None
    (1 - generalized_box_iou(pred, target)).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # Moving towards the target lowers the loss: the z0 gradient is positive (decreasing z0 helps).
    assert pred.grad[0, 0] > 0


def test_gradient_flows_through_centre_format_and_l1():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(5, 6, generator=g).requires_grad_()
    target = torch.rand(5, 6, generator=g)
    loss = (
        box_l1(pred, target).sum() + (1 - generalized_box_iou(center_to_corners(pred), center_to_corners(target))).sum()
    )
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad.abs().sum(1) > 0).all()


def test_zero_volume_boxes_give_finite_values():
    point = torch.tensor([[0.5, 0.5, 0.5, 0.0, 0.0, 0.0]])
    corners = center_to_corners(point)
    assert torch.isfinite(generalized_box_iou(corners, corners)).all()
    assert torch.isfinite(pairwise_generalized_box_iou(corners, corners)).all()


def test_box_targets_are_instance_segments_or_foreground():
    labels = torch.tensor([0, 1, 2, 2, 3])
    assert box_target_segments(labels).tolist() == [False, True, True, True, True]
    assert box_target_segments(labels, (2,)).tolist() == [False, False, True, True, False]


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (center_to_corners, (torch.zeros(2, 4),)),
        (box_iou, (torch.zeros(2, 6), torch.zeros(3, 6))),
        (pairwise_box_l1, (torch.zeros(2, 6), torch.zeros(3, 5))),
        (boxes_from_masks, (torch.zeros(4, 4, 4, dtype=torch.bool),)),
    ],
)
def test_bad_shapes_raise(fn, args):
    with pytest.raises(ValueError, match="shape"):
        fn(*args)
