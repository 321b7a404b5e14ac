"""Instance targets (issue 12): every 26-connected component of an instance class is its own segment, with a
whole-voxel box; semantic classes and the default targets are unchanged."""

from __future__ import annotations

import torch

from MaskMedCore.losses.box_losses import boxes_from_masks
from MaskMedCore.losses.targets import build_targets, segment_targets, stage_targets


def organs_and_two_lesions() -> torch.Tensor:
    """(1, 12, 12, 12): organ 1 and organ 2 as blocks, two separate lesions of class 3 (the first one
    earlier in raster order), background elsewhere."""
    labels = torch.zeros(1, 12, 12, 12, dtype=torch.long)
    labels[0, :6, :6, :] = 1
    labels[0, 6:, 6:, :6] = 2
    labels[0, 1:3, 8:11, 8:10] = 3  # lesion A: z 1..2, y 8..10, x 8..9
    labels[0, 8:11, 1:3, 9:12] = 3  # lesion B: z 8..10, y 1..2, x 9..11
    return labels


def test_two_lesions_become_two_segments_next_to_the_semantic_ones():
    labels = organs_and_two_lesions()
    (t,) = build_targets(labels, instance_classes=(3,))
    assert t.labels.tolist() == [0, 1, 2, 3, 3]  # (class, component order)
    assert t.masks.dtype == torch.bool and t.masks.shape == (5, 12, 12, 12)
    for n, k in enumerate([0, 1, 2]):
        assert torch.equal(t.masks[n], labels[0] == k)
    lesion_a = torch.zeros(12, 12, 12, dtype=torch.bool)
    lesion_a[1:3, 8:11, 8:10] = True
    assert torch.equal(t.masks[3], lesion_a)  # first in raster order (smaller z)
    assert torch.equal(t.masks[3] | t.masks[4], labels[0] == 3) and not (t.masks[3] & t.masks[4]).any()
    assert t.boxes is None


def test_diagonal_neighbours_are_one_lesion_but_a_gap_splits():
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[0, 2, 2, 2] = labels[0, 3, 3, 3] = 1  # share only a corner: 26-connected, not 6- or 18-connected
    labels[0, 6, 6, 6] = 1  # two voxels of background away from (3, 3, 3) along every axis
    (t,) = build_targets(labels, instance_classes=(1,))
    assert t.labels.tolist() == [0, 1, 1]
    assert t.masks[1].sum().item() == 2 and t.masks[1][2, 2, 2] and t.masks[1][3, 3, 3]
    assert t.masks[2].sum().item() == 1 and t.masks[2][6, 6, 6]
    labels[0, 5, 5, 5] = 1  # joins the far voxel but (3,3,3)-(5,5,5) still has a gap at 4
    (t,) = build_targets(labels, instance_classes=(1,))
    assert t.labels.tolist() == [0, 1, 1]
    labels[0, 4, 4, 4] = 1  # now a diagonal chain: one component
    (t,) = build_targets(labels, instance_classes=(1,))
    assert t.labels.tolist() == [0, 1] and t.masks[1].sum().item() == 5


def test_boxes_are_whole_voxel_boxes_of_each_segment():
    labels = organs_and_two_lesions()
    (t,) = build_targets(labels, instance_classes=(3,), with_boxes=True)
    assert t.boxes.dtype == torch.float32 and t.boxes.shape == (5, 6)
    assert torch.equal(t.boxes, boxes_from_masks(t.masks))
    # Lesion A covers z 1..2, y 8..10, x 8..9 of 12: centre (lo + hi + 1) / 2 / 12, size (hi - lo + 1) / 12.
    expected = [(1 + 2 + 1) / 24, (8 + 10 + 1) / 24, (8 + 9 + 1) / 24, 2 / 12, 3 / 12, 2 / 12]
    assert torch.allclose(t.boxes[3], torch.tensor(expected))
    assert torch.allclose(t.boxes[4], torch.tensor([19 / 24, 4 / 24, 21 / 24, 3 / 12, 2 / 12, 3 / 12]))
    # The background box spans the patch.
    assert torch.allclose(t.boxes[0], torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0]))


def test_default_arguments_give_todays_targets():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 6, 6, 6), generator=g)
    labels[1][labels[1] == 2] = 0
    for a, b in zip(build_targets(labels), build_targets(labels, instance_classes=(), with_boxes=False), strict=True):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks) and b.boxes is None
    for b, t in enumerate(build_targets(labels)):
        reference = segment_targets(labels[b])
        assert torch.equal(t.labels, reference.labels) and torch.equal(t.masks, reference.masks)
        assert t.labels.tolist() == sorted(set(labels[b].flatten().tolist()))


def test_absent_instance_class_changes_nothing_and_class_order_is_kept():
    labels = organs_and_two_lesions()
    labels[labels == 3] = 0
    (plain,) = build_targets(labels)
    (inst,) = build_targets(labels, instance_classes=(3,))
    assert torch.equal(plain.labels, inst.labels) and torch.equal(plain.masks, inst.masks)
    # An instance class below a semantic one keeps the class order: [0, 1, 1, 2].
    labels = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    labels[0, 0, 0, 0] = labels[0, 5, 5, 5] = 1
    labels[0, 3, 0, 5] = 2
    labels[0, 0, 5, 0] = 2
    (t,) = build_targets(labels, instance_classes=(1,))
    assert t.labels.tolist() == [0, 1, 1, 2]
    assert t.masks[3].sum().item() == 2  # semantic class 2 stays one segment


def test_stage_targets_resize_each_instance_and_keep_boxes():
    labels = organs_and_two_lesions()
    full = build_targets(labels, instance_classes=(3,), with_boxes=True)
    (coarse,) = stage_targets(labels, full, (6, 6, 6))
    assert coarse.labels.tolist() == [0, 1, 2, 3, 3] and coarse.masks.shape == (5, 6, 6, 6)
    assert torch.equal(coarse.boxes, full[0].boxes)
    # nearest-exact at factor 2 reads the odd voxels of the full-resolution masks
    assert torch.equal(coarse.masks, full[0].masks[:, 1::2, 1::2, 1::2])
    # For semantic targets this is exactly the old label-map route.
    semantic = build_targets(labels)
    (small,) = stage_targets(labels, semantic, (6, 6, 6))
    reference = segment_targets(labels[0, 1::2, 1::2, 1::2], semantic[0].labels)
    assert torch.equal(small.masks, reference.masks)
