"""Segment targets from label maps (MaskMed §3.5; Mask2Former's semantic target construction).

Every function here works on images (labels (B, H, W)) and volumes (labels (B, D, H, W)) alike; the
number of spatial axes is read from the tensors. A label map becomes one binary mask per class present
in the image, background (class 0)
included: background is an ordinary class with its own query. An image that contains only
background therefore has exactly one segment. For deep supervision the label map is
downsampled to each stage with ``nearest-exact`` interpolation, as nnU-Net's
``DownsampleSegForDSTransform`` does. A small structure can vanish at a coarse stage; its segment
is kept (the class set comes from the full-resolution map) with an empty mask there, so matching
indices stay valid at every stage. (PLAN re-seeds such structures at their centroid; we do not.)

Instance classes (issue 12, ``ModelConfig.instance_classes``): every connected component of such a
class (e.g. each lesion) is its own segment with that class id, so each lesion gets its own query.
Components are 26-connected in 3D and 8-connected in 2D (full 3x3x3 / 3x3 neighbourhoods: faces, edges
and corners), so a (1, H, W) volume and its (H, W) image split the same way. Segments are ordered by
class id; the components of one instance class follow in ``scipy.ndimage.label``'s order (raster order of
each component's first voxel, the first axis slowest). With ``with_boxes`` every segment also carries its
whole-voxel bounding box (``box_losses.boxes_from_masks``; volumes only: boxes are 3D-only by config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from MaskMedCore.errors import DataError
from MaskMedCore.losses.box_losses import boxes_from_masks


@dataclass(frozen=True)
class SegmentTargets:
    """The ground-truth segments of one image.

    Attributes:
        labels: (N,) int64 class ids of the segments, sorted ascending (an instance class repeats once per
            component).
        masks: (N, D, H, W) bool binary masks, one per segment; (N, H, W) for images.
        boxes: (N, 6) float32 whole-voxel boxes ``(cz, cy, cx, d, h, w)`` as fractions of (D, H, W), or
            None when the targets were built without boxes (always None for images).
    """

    labels: Tensor
    masks: Tensor
    boxes: Tensor | None = None

    @property
    def num_segments(self) -> int:
        return int(self.labels.shape[0])


def check_label_map(
    labels: Tensor, num_classes: int, spatial: tuple[int, ...] | None = None, spatial_dims: int = 3
) -> Tensor:
    """Validate a batch of label maps and return it as int64.

    Args:
        labels: (B, D, H, W) or (B, H, W) integer label map, values in 0..K-1.
        num_classes: K, background included.
        spatial: expected (D, H, W) or (H, W), usually the finest prediction's size; ``None`` skips the check.
        spatial_dims: expected number of spatial axes when ``spatial`` is None (3: volumes, 2: images);
            with ``spatial`` given it is ``len(spatial)``.

    Returns:
        (B, D, H, W) or (B, H, W) int64 labels.

    Raises:
        DataError: wrong rank, a non-integer dtype, a size mismatch or a value outside 0..K-1.
        ValueError: ``spatial`` or ``spatial_dims`` asks for other than 2 or 3 spatial axes.
    """
    if spatial is not None:
        spatial_dims = len(spatial)
    if spatial_dims not in (2, 3):
        raise ValueError(f"label maps have 2 or 3 spatial axes, got spatial_dims={spatial_dims} (spatial={spatial})")
    layout = "(B, D, H, W)" if spatial_dims == 3 else "(B, H, W)"
    if not isinstance(labels, Tensor) or labels.dim() != spatial_dims + 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        found = "" if spatial is None else f" to fit the prediction's spatial size {tuple(spatial)}"
        raise DataError(f"labels must be a {layout} tensor{found}, got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(
            f"labels must have an integer dtype (int64), got {labels.dtype}; cast the label map with .long()"
        )
    if spatial is not None and tuple(labels.shape[1:]) != tuple(spatial):
        raise DataError(
            f"labels have spatial size {tuple(labels.shape[1:])} but the finest prediction is {tuple(spatial)}; "
            "labels must be at the network's input resolution"
        )
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise DataError(
                f"labels contain value {bad} but the model predicts K={num_classes} classes (0..{num_classes - 1}); "
                "check dataset.json labels and num_classes"
            )
    return labels.long()


def downsample_labels(labels: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize label maps to ``size`` with ``nearest-exact`` interpolation (nnU-Net's DS targets).

    Args:
        labels: (B, D, H, W) or (B, H, W) integer labels.
        size: target (D_s, H_s, W_s) or (H_s, W_s), one entry per spatial axis of ``labels``.

    Returns:
        (B, D_s, H_s, W_s) or (B, H_s, W_s) labels of the same dtype; ``labels`` itself when the size
        already matches.
    """
    if tuple(labels.shape[1:]) == tuple(size):
        return labels
    # Class ids are small integers, exact in float32; interpolate needs a floating (B, 1, *spatial) input.
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].to(labels.dtype)


def segment_targets(label_map: Tensor, classes: Tensor | None = None) -> SegmentTargets:
    """Segments of one image.

    Args:
        label_map: (D, H, W) or (H, W) integer labels.
        classes: (N,) int64 class ids to build masks for; ``None`` takes the classes present in
            ``label_map`` (sorted). A class given here but absent from the map gets an empty mask.

    Returns:
        The image's ``SegmentTargets`` with masks (N, D, H, W) or (N, H, W).
    """
    if classes is None:
        classes = torch.unique(label_map)  # sorted
    classes = classes.to(device=label_map.device, dtype=torch.long)
    masks = label_map[None] == _per_segment(classes, label_map.dim())  # (N, *spatial)
    return SegmentTargets(labels=classes, masks=masks)


def build_targets(
    labels: Tensor, instance_classes: Sequence[int] = (), with_boxes: bool = False
) -> list[SegmentTargets]:
    """Per-image segments of a batch of label maps.

    Args:
        labels: (B, D, H, W) or (B, H, W) integer labels.
        instance_classes: label values whose connected components (26-connected in 3D, 8-connected in 2D)
            are separate segments; the other classes present give one segment each. Empty (default): one
            segment per class present.
        with_boxes: also compute each segment's box (``SegmentTargets.boxes``); volumes only.

    Returns:
        B ``SegmentTargets`` on the labels' device, segments sorted by (class id, component order).

    Raises:
        ValueError: ``with_boxes`` for 2D labels (boxes are 3D-only; ``ModelConfig`` rejects a 2D box head).
    """
    if with_boxes and labels.dim() != 4:
        raise ValueError(f"segment boxes need (B, D, H, W) labels, got shape {tuple(labels.shape)}; boxes are 3D-only")
    instance = sorted({int(k) for k in instance_classes})
    out = []
    for label_map in labels:
        target = segment_targets(label_map)
        if instance:
            target = _split_instances(label_map, target, instance)
        if with_boxes:
            target = SegmentTargets(target.labels, target.masks, boxes_from_masks(target.masks))
        out.append(target)
    return out


def _split_instances(label_map: Tensor, semantic: SegmentTargets, instance: list[int]) -> SegmentTargets:
    """Replace the one segment of each instance class by one segment per connected component
    (26-connected for a (D, H, W) map, 8-connected for an (H, W) map)."""
    present = semantic.labels.tolist()
    if not any(k in present for k in instance):
        return semantic
    array = label_map.detach().cpu().numpy()
    structure = np.ones((3,) * array.ndim, dtype=bool)  # 3D: 26-connectivity, 2D: 8 (faces, edges, corners)
    ids, masks = [], []
    for n, k in enumerate(present):
        if k not in instance:
            ids.append(torch.tensor([k]))
            masks.append(semantic.masks[n : n + 1])
            continue
        components, count = ndimage.label(array == k, structure=structure)  # 0 = not k; 1..count in raster order
        components = torch.from_numpy(components).to(label_map.device)
        index = torch.arange(1, count + 1, device=label_map.device)
        ids.append(torch.full((count,), k))
        masks.append(components[None] == _per_segment(index, array.ndim))  # (count, *spatial)
    return SegmentTargets(torch.cat(ids).to(label_map.device), torch.cat(masks))


def stage_targets(labels: Tensor, targets: list[SegmentTargets], size: tuple[int, ...]) -> list[SegmentTargets]:
    """The segments of ``targets`` at a decoder stage's resolution.

    The segments of every image are kept as they are (so matching indices refer to the same segments
    at every stage); each mask is resized with ``nearest-exact``, which gives exactly the masks of the
    ``nearest-exact`` downsampled label map (both read the same source voxel) and also works for
    instance segments. Boxes are fractions of the patch, so they carry over unchanged.

    Args:
        labels: (B, D, H, W) or (B, H, W) integer labels at input resolution.
        targets: B full-resolution ``SegmentTargets`` (from ``build_targets``).
        size: the stage's (D_s, H_s, W_s) or (H_s, W_s).

    Returns:
        B ``SegmentTargets`` with masks (N_b, D_s, H_s, W_s) or (N_b, H_s, W_s).
    """
    if tuple(labels.shape[1:]) == tuple(size):
        return targets
    return [SegmentTargets(t.labels, resize_masks(t.masks, size), t.boxes) for t in targets]


def resize_masks(masks: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize binary masks with ``nearest-exact`` interpolation.

    Args:
        masks: (N, D, H, W) or (N, H, W) bool or 0/1 masks.
        size: target (D_s, H_s, W_s) or (H_s, W_s).

    Returns:
        (N, D_s, H_s, W_s) or (N, H_s, W_s) bool masks.
    """
    if tuple(masks.shape[1:]) == tuple(size):
        return masks.bool()
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.bool)
    return F.interpolate(masks[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0] > 0.5


def _per_segment(values: Tensor, spatial_dims: int) -> Tensor:
    """(N,) values -> (N, 1, ..., 1) with ``spatial_dims`` trailing singleton axes, to compare with a label map."""
    return values.reshape(-1, *([1] * spatial_dims))
