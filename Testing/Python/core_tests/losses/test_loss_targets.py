"""Segment targets and deep-supervision label maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.errors import DataError
from MaskMedCore.losses.targets import (
    build_targets,
    check_label_map,
    downsample_labels,
    resize_masks,
    segment_targets,
    stage_targets,
)


def test_segments_are_present_classes_sorted_with_their_masks():
    label_map = torch.zeros(4, 4, 4, dtype=torch.long)
    label_map[0, 0, 0] = 3
    label_map[1] = 1  # class 2 absent
    t = segment_targets(label_map)
    assert t.labels.tolist() == [0, 1, 3]
    assert t.masks.dtype == torch.bool and t.masks.shape == (3, 4, 4, 4)
    for n, k in enumerate(t.labels.tolist()):
        assert torch.equal(t.masks[n], label_map == k)
    assert torch.equal(t.masks.sum(0), torch.ones(4, 4, 4, dtype=torch.long))  # a partition


def test_only_background_is_one_segment_and_explicit_absent_class_is_empty():
    label_map = torch.zeros(2, 3, 4, dtype=torch.long)
    assert build_targets(label_map[None])[0].labels.tolist() == [0]
    t = segment_targets(label_map, classes=torch.tensor([0, 2]))
    assert t.masks[0].all() and not t.masks[1].any()


def test_downsample_is_nearest_exact():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (2, 8, 12, 16), generator=g)
    small = downsample_labels(labels, (4, 6, 8))
    assert small.dtype == labels.dtype
    # nearest-exact at factor 2 reads the second voxel of each pair
    assert torch.equal(small, labels[:, 1::2, 1::2, 1::2])
    reference = F.interpolate(labels[:, None].double(), size=(3, 5, 7), mode="nearest-exact")[:, 0].long()
    assert torch.equal(downsample_labels(labels, (3, 5, 7)), reference)
    assert downsample_labels(labels, (8, 12, 16)) is labels


def test_stage_targets_keep_the_class_set_when_a_structure_vanishes():
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[0, 0, 0, 0] = 2  # vanishes at factor 2 (nearest-exact reads odd voxels)
    full = build_targets(labels)
    coarse = stage_targets(labels, full, (4, 4, 4))
    assert coarse[0].labels.tolist() == [0, 2]
    assert coarse[0].masks.shape == (2, 4, 4, 4) and not coarse[0].masks[1].any()
    assert torch.equal(resize_masks(full[0].masks, (4, 4, 4)), coarse[0].masks)


@pytest.mark.parametrize(
    ("labels", "spatial", "match"),
    [
        (torch.zeros(4, 4, 4, dtype=torch.long), None, r"\(B, D, H, W\)"),
        (torch.zeros(1, 4, 4, 4), None, "integer dtype"),
        (torch.full((1, 4, 4, 4), 3), None, "value 3 .* K=3"),
        (torch.full((1, 4, 4, 4), -1), None, "value -1"),
        (torch.zeros(1, 4, 4, 4, dtype=torch.long), (8, 8, 8), "input resolution"),
    ],
)
def test_bad_label_maps_raise_data_error(labels, spatial, match):
    with pytest.raises(DataError, match=match):
        check_label_map(labels, 3, spatial)
