"""Instances from the query masks of a sliding-window prediction (issue 12): per-tile candidates, merged
across tiles into one instance label map.

Candidates follow Mask2Former's instance inference (Cheng et al. 2022, §4 / ``instance_inference`` in
``mask2former/maskformer_model.py``): a query's class is its most probable real class, its score is
that class probability times the mean mask probability inside its predicted mask (sigmoid > 0.5).
Every query whose class is an instance class and whose score reaches ``threshold`` is a candidate.

Tiles overlap, so one lesion is usually seen by several tiles (and queries). :func:`merge_candidates`
resolves them over the whole volume, greedily in descending score (Mask2Former's panoptic overlap
rule, extended across tiles):

1. A candidate whose voxels lie for at least ``same_object_fraction`` (50 %) in one already accepted
   instance of the same class is that object seen from another tile: its still unclaimed voxels are
   added to it. The instance keeps its (higher) score, query and head box: candidates come in
   descending score, so the accepted part always scored higher.
2. Otherwise its still unclaimed voxels become a new instance if they are at least
   ``overlap_threshold`` (80 %, Mask2Former's ``overlap_threshold``) of its mask and not empty.
3. Otherwise it is dropped (a weaker duplicate, or a lesion mostly covered by a stronger one).

Instance ids 1..n therefore follow descending score. With the sliding window's default overlap (0.5)
an object no larger than half the patch along each axis lies whole inside some tile; larger objects
are seen in parts, which rule 1 joins when each part lies mostly inside the already accepted ones.

Coordinates: (D, H, W) array order in the preprocessed (network) volume. Boxes are continuous
voxel-edge coordinates ``(d0, h0, w0, d1, h1, w1)``: a box around voxels ``a..b-1`` along an axis runs
from ``a`` to ``b``. The head's boxes ``(cz, cy, cx, d, h, w)`` are fractions of the tile in the same
convention: centre ``(a + b) / 2 / size`` and extent ``(b - a) / size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DEFAULT_THRESHOLD = 0.5
SAME_OBJECT_FRACTION = 0.5
OVERLAP_THRESHOLD = 0.8


@dataclass
class InstanceCandidate:
    """One query of one tile that predicts an instance.

    Attributes:
        class_value: predicted label value (an instance class).
        score: class probability x mean sigmoid mask probability inside the mask.
        origin: (d, h, w) volume voxel of ``mask[0, 0, 0]``.
        mask: (d, h, w) bool: the query's mask (sigmoid > 0.5) cropped to its bounding box, inside the volume.
        query: query index.
        box: (6,) head box ``(d0, h0, w0, d1, h1, w1)`` in volume voxel-edge coordinates, or None.
    """

    class_value: int
    score: float
    origin: tuple[int, int, int]
    mask: np.ndarray
    query: int
    box: np.ndarray | None = None

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Where ``mask`` lies in the volume."""
        return tuple(slice(o, o + s) for o, s in zip(self.origin, self.mask.shape))


@dataclass
class Instance:
    """One merged instance; its voxels are ``label_map == id``.

    Attributes:
        id: 1..n, in descending score.
        class_value: label value.
        score: the best score among the candidates merged into it.
        query: that candidate's query index.
        box: its head box ``(d0, h0, w0, d1, h1, w1)`` (volume voxel edges), or None without a box head.
    """

    id: int
    class_value: int
    score: float
    query: int
    box: np.ndarray | None = None


@dataclass
class MergedInstances:
    """Attributes:
    label_map: (D, H, W) int32 instance ids, 0 = none.
    instances: one per id, ``instances[i].id == i + 1``.
    """

    label_map: np.ndarray
    instances: list[Instance]


def head_box_to_volume(box: Tensor | np.ndarray, tile_origin: Sequence[int], tile_shape: Sequence[int]) -> np.ndarray:
    """A head box as tile fractions -> volume voxel-edge coordinates.

    Args:
        box: (6,) ``(cz, cy, cx, d, h, w)`` centre and size as fractions of the tile's (D, H, W).
        tile_origin: (d, h, w) volume voxel of the tile's first voxel.
        tile_shape: the tile's (d, h, w) size.

    Returns:
        (6,) float64 ``(d0, h0, w0, d1, h1, w1)``; a box around voxels ``a..b-1`` of the tile maps to
        ``origin + a`` .. ``origin + b``.
    """
    b = box.detach().double().cpu().numpy() if isinstance(box, Tensor) else np.asarray(box, dtype=np.float64)
    if b.shape != (6,):
        raise ValueError(f"box must have shape (6,) = (cz, cy, cx, d, h, w), got {b.shape}")
    size = np.asarray(tile_shape, dtype=np.float64)
    centre = np.asarray(tile_origin, dtype=np.float64) + b[:3] * size
    half = b[3:] * size / 2
    return np.concatenate([centre - half, centre + half])


def tile_candidates(
    class_logits: Tensor,
    mask_logits: Tensor,
    instance_classes: Sequence[int],
    origin: Sequence[int],
    volume_shape: Sequence[int],
    *,
    boxes: Tensor | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[InstanceCandidate]:
    """The instance candidates of one tile (un-mirrored forward pass, decoupled head).

    Args:
        class_logits: (Q, K+1) class logits of the tile (last = no object).
        mask_logits: (Q, d, h, w) final mask logits of the tile.
        instance_classes: label values predicted as instances.
        origin: (d, h, w) volume voxel of the tile's first voxel; may be negative, or the tile may reach
            past the volume, where the sliding window padded the input (those voxels are dropped).
        volume_shape: (D, H, W) of the volume.
        boxes: (Q, 6) sigmoid head boxes ``(cz, cy, cx, d, h, w)`` (tile fractions), or None.
        threshold: minimum score.

    Returns:
        Candidates in query order.
    """
    Q, d, h, w = mask_logits.shape
    if class_logits.ndim != 2 or class_logits.shape[0] != Q:
        raise ValueError(f"class_logits must be (Q={Q}, K+1), got {tuple(class_logits.shape)}")
    if boxes is not None and tuple(boxes.shape) != (Q, 6):
        raise ValueError(f"boxes must be (Q={Q}, 6), got {tuple(boxes.shape)}")
    probs = class_logits.float().softmax(-1)  # (Q, K+1)
    prob, klass = probs[:, :-1].max(-1)  # over the K real classes
    wanted = torch.tensor(sorted(instance_classes), dtype=klass.dtype, device=klass.device)
    keep = torch.isin(klass, wanted) & (prob >= threshold)  # the score is at most the class probability
    # The part of the tile inside the volume (the rest is the sliding window's zero padding).
    lo = [max(0, -o) for o in origin]
    hi = [min(s, n - o) for s, n, o in zip((d, h, w), volume_shape, origin)]
    if any(a >= b for a, b in zip(lo, hi)):
        return []
    inside = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    out = []
    for q in torch.nonzero(keep).flatten().tolist():
        mask_prob = mask_logits[q][inside].float().sigmoid()  # (d', h', w')
        mask = mask_prob > 0.5
        area = int(mask.sum())
        if area == 0:
            continue
        score = float(prob[q]) * float(mask_prob[mask].sum()) / area
        if score < threshold:
            continue
        mask = mask.cpu().numpy()
        lo_q, hi_q = _bounds(mask)
        crop = mask[lo_q[0] : hi_q[0], lo_q[1] : hi_q[1], lo_q[2] : hi_q[2]].copy()
        out.append(
            InstanceCandidate(
                class_value=int(klass[q]),
                score=score,
                origin=tuple(int(o + a + b) for o, a, b in zip(origin, lo, lo_q)),
                mask=crop,
                query=q,
                box=None if boxes is None else head_box_to_volume(boxes[q], origin, (d, h, w)),
            )
        )
    return out


def _bounds(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """Half-open bounding box ``(first, end)`` per axis of a non-empty (d, h, w) bool mask."""
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]) + 1)
    return lo, hi


def merge_candidates(
    candidates: Sequence[InstanceCandidate],
    volume_shape: Sequence[int],
    *,
    same_object_fraction: float = SAME_OBJECT_FRACTION,
    overlap_threshold: float = OVERLAP_THRESHOLD,
) -> MergedInstances:
    """Resolve candidates of all tiles into one instance map (the module docstring gives the rule).

    Args:
        candidates: from :func:`tile_candidates`, any order (ties in score keep this order).
        volume_shape: (D, H, W) of the volume.
        same_object_fraction: share of a candidate inside one accepted instance of its class that makes
            it the same object.
        overlap_threshold: share of a candidate that must be unclaimed for it to become a new instance.

    Returns:
        The (D, H, W) int32 instance map and its instances, ids 1..n in descending score.
    """
    label_map = np.zeros(tuple(volume_shape), dtype=np.int32)
    instances: list[Instance] = []
    for cand in sorted(candidates, key=lambda c: -c.score):  # sorted() is stable: ties keep input order
        area = cand.area
        if area == 0:
            continue
        region = label_map[cand.slices]  # a view: writes go into label_map
        assert region.shape == cand.mask.shape, "candidate mask reaches outside the volume"
        owners = region[cand.mask]
        unclaimed = cand.mask & (region == 0)
        counts = np.bincount(owners, minlength=len(instances) + 1)
        counts[0] = 0
        for inst in instances:  # only instances of the candidate's class can be the same object
            if inst.class_value != cand.class_value:
                counts[inst.id] = 0
        best = int(np.argmax(counts))
        if best > 0 and counts[best] >= same_object_fraction * area:
            region[unclaimed] = best
            continue
        n_free = int(unclaimed.sum())
        if n_free > 0 and n_free >= overlap_threshold * area:
            new_id = len(instances) + 1
            region[unclaimed] = new_id
            instances.append(Instance(new_id, cand.class_value, cand.score, cand.query, cand.box))
    return MergedInstances(label_map, instances)
