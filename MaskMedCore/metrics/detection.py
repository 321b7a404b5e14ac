"""Lesion detection: predicted instances matched to reference lesions by 3D mask IoU, AP and FROC.

Reference lesions are the 26-connected components of the reference class mask
(``lesions.lesion_components``; unlike the lesion-wise Dice there is no merging by dilation and no
volume threshold). Predicted instances are scored binary masks: the components of a predicted label
map (``instances_from_label_map``, score 1.0 or the max/mean probability inside) or any list of masks,
possibly overlapping, with one score each (``detections_from_masks``).

Matching, per case at one IoU threshold (``match_detections``): predictions in descending score order
(ties keep the given order); each takes the still unmatched reference lesion with the highest mask IoU
(|P ∩ R| / |P ∪ R|) that is >= the threshold (ties: the lowest lesion index), as COCO's evaluation does.
A matched prediction is a true positive, an unmatched one a false positive, an unmatched lesion a false
negative; every lesion is matched at most once.

Average precision (``average_precision``): the predictions of all cases ranked together by score, one
precision/recall point per distinct score (tied predictions enter together, so their order does not
matter: a plain label map, every score 1.0, has one point and AP = precision x recall). AP is the area
under the precision envelope with all-point interpolation as in PASCAL VOC 2010-2012 (precision at
recall r = the highest precision at any recall >= r), not COCO's 101-point sampling. nan when no case
has a reference lesion; 0 with lesions but no predictions.

FROC (``froc_sensitivities``): at each distinct score threshold, sensitivity = TP / reference lesions
and FP per case = FP / number of cases (cases without lesions count). The sensitivity at a target rate
is that of the lowest score threshold whose FP per case is still <= the target (the highest sensitivity
within the target); no interpolation between operating points (LUNA16 interpolates); 0 when even the
highest threshold exceeds the target; nan when no case has a reference lesion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.metrics.lesions import lesion_components
from MaskMedCore.metrics.overlap import class_mask

FROC_FP_PER_CASE = (0.5, 1.0, 2.0, 4.0)
SCORE_REDUCTIONS = ("max", "mean")


@dataclass(frozen=True)
class ScoredInstances:
    """Non-overlapping predicted instances of one case: instance i (1-based) is ``labels == i``.

    Attributes:
        labels: (D, H, W) int32 label map, 0 where there is no instance.
        scores: (P,) float scores, ``scores[i - 1]`` for instance i.
    """

    labels: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class CaseDetections:
    """What detection metrics need of one case; small and picklable (no masks).

    Attributes:
        scores: (P,) float score of each prediction.
        iou: (P, G) mask IoU of prediction p with reference lesion g.
    """

    scores: np.ndarray
    iou: np.ndarray

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        iou = np.asarray(self.iou, dtype=np.float64)
        if iou.ndim != 2 or iou.shape[0] != scores.size:
            raise DataError(f"iou must have shape (P, G) with P = {scores.size} scores, got {iou.shape}")
        if not np.all(np.isfinite(scores)):
            raise DataError("detection scores must be finite numbers; found nan or inf")
        if iou.size and (np.isnan(iou).any() or iou.min() < 0 or iou.max() > 1):
            raise DataError("iou values must lie in [0, 1]")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "iou", iou)

    @property
    def n_ref(self) -> int:
        """Number of reference lesions G."""
        return int(self.iou.shape[1])


def instances_from_label_map(
    label_map: np.ndarray,
    values: int | Sequence[int],
    probabilities: np.ndarray | None = None,
    score: str = "max",
) -> ScoredInstances:
    """The components of one class of a label map as scored instances.

    Args:
        label_map: (D, H, W) integer label map.
        values: the class's label value, or the values whose union forms the region.
        probabilities: optional (D, H, W) probability of this class per voxel; without it every score is 1.0.
        score: ``"max"`` or ``"mean"`` of ``probabilities`` inside each component.

    Returns:
        ``ScoredInstances`` with the 26-connected components in raster order.

    Raises:
        ConfigError: unknown ``score``.
        DataError: ``probabilities`` has another shape or non-finite values.
    """
    if score not in SCORE_REDUCTIONS:
        raise ConfigError(f"score must be one of {SCORE_REDUCTIONS}, got {score!r}")
    labels, n = lesion_components(class_mask(np.asarray(label_map), values))
    if probabilities is None:
        return ScoredInstances(labels, np.ones(n, dtype=np.float64))
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != labels.shape:
        raise DataError(f"probabilities has shape {probabilities.shape}; the label map has {labels.shape}")
    if not np.all(np.isfinite(probabilities)):
        raise DataError("probabilities contain nan or inf; expected per-voxel probabilities in [0, 1]")
    reduce = ndimage.maximum if score == "max" else ndimage.mean
    scores = np.asarray(reduce(probabilities, labels, index=np.arange(1, n + 1)), dtype=np.float64).reshape(-1)
    return ScoredInstances(labels, scores)


def _reference_lesions(ref_mask: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(reference lesion label map, (G,) lesion sizes in voxels)."""
    ref_labels, n_ref = lesion_components(ref_mask)
    if ref_labels.shape != shape:
        raise DataError(f"predictions have shape {shape} but ref_mask has {ref_labels.shape}")
    return ref_labels, np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:]


def detections_from_instances(instances: ScoredInstances, ref_mask: np.ndarray) -> CaseDetections:
    """IoU of non-overlapping predicted instances with the reference lesions of one case.

    Args:
        instances: predicted instances as a (D, H, W) label map with (P,) scores.
        ref_mask: (D, H, W) binary reference mask of the class.

    Returns:
        ``CaseDetections`` with the (P, G) IoU matrix.
    """
    pred_labels = np.asarray(instances.labels)
    n_pred = len(instances.scores)
    if pred_labels.size and (pred_labels.min() < 0 or pred_labels.max() > n_pred):
        raise DataError(f"instance labels must lie in 0..{n_pred} (one score per instance), got a {pred_labels.max()}")
    ref_labels, ref_sizes = _reference_lesions(ref_mask, pred_labels.shape)
    n_ref = ref_sizes.size
    both = (pred_labels > 0) & (ref_labels > 0)
    # Intersections from the (prediction, lesion) pairs that actually overlap: no P x G mask products.
    pairs = pred_labels[both].astype(np.int64) * (n_ref + 1) + ref_labels[both]
    pair_codes, counts = np.unique(pairs, return_counts=True)
    intersection = np.zeros((n_pred, n_ref))
    intersection[pair_codes // (n_ref + 1) - 1, pair_codes % (n_ref + 1) - 1] = counts
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:]
    union = pred_sizes[:, None] + ref_sizes[None, :] - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return CaseDetections(instances.scores, iou)


def detections_from_masks(masks: Sequence[np.ndarray], scores: Sequence[float], ref_mask: np.ndarray) -> CaseDetections:
    """IoU of predicted instance masks (may overlap) with the reference lesions of one case.

    Args:
        masks: P binary masks, each (D, H, W).
        scores: (P,) their scores.
        ref_mask: (D, H, W) binary reference mask of the class.

    Returns:
        ``CaseDetections`` with the (P, G) IoU matrix.
    """
    if len(masks) != len(scores):
        raise DataError(f"{len(masks)} instance masks but {len(scores)} scores; give one score per mask")
    shape = tuple(np.shape(masks[0])) if len(masks) else np.shape(ref_mask)
    ref_labels, ref_sizes = _reference_lesions(ref_mask, shape)
    iou = np.zeros((len(masks), ref_sizes.size))
    for p, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref_labels.shape:
            raise DataError(f"instance mask {p} has shape {mask.shape}; ref_mask has {ref_labels.shape}")
        intersection = np.bincount(ref_labels[mask], minlength=ref_sizes.size + 1)[1:]
        iou[p] = intersection / (np.count_nonzero(mask) + ref_sizes - intersection)  # > 0: lesions are non-empty
    return CaseDetections(np.asarray(scores, dtype=np.float64), iou)


def _check_iou_threshold(iou_threshold: float) -> None:
    if not (isinstance(iou_threshold, (int, float)) and 0 < iou_threshold <= 1):
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")


def match_detections(case: CaseDetections, iou_threshold: float) -> np.ndarray:
    """Greedy score-ordered matching of one case (rules: module docstring).

    Returns:
        (P,) bool, True for the predictions that are true positives, in the case's prediction order.
    """
    _check_iou_threshold(iou_threshold)
    is_tp = np.zeros(case.scores.size, dtype=bool)
    if case.n_ref == 0:
        return is_tp
    taken = np.zeros(case.n_ref, dtype=bool)
    for p in np.argsort(-case.scores, kind="stable"):
        candidates = np.where(taken, -1.0, case.iou[p])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            is_tp[p] = taken[best] = True
    return is_tp


def detection_counts(case: CaseDetections, iou_threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of one case at one IoU threshold."""
    tp = int(np.count_nonzero(match_detections(case, iou_threshold)))
    return tp, case.scores.size - tp, case.n_ref - tp


def _operating_points(cases: Sequence[CaseDetections], iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Cumulative (TP, FP) at each distinct score threshold, highest first, and the number of lesions."""
    n_ref = sum(case.n_ref for case in cases)
    if not cases:
        return np.zeros(0), np.zeros(0), n_ref
    scores = np.concatenate([case.scores for case in cases])
    hits = np.concatenate([match_detections(case, iou_threshold) for case in cases])
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    group_ends = np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, dtype=bool)
    return np.cumsum(hits)[group_ends], np.cumsum(~hits)[group_ends], n_ref


def average_precision(cases: Sequence[CaseDetections], iou_threshold: float) -> float:
    """Detection AP over a set of cases at one IoU threshold (all-point interpolation; module docstring).

    Args:
        cases: the ``CaseDetections`` of every case.
        iou_threshold: minimum IoU of a match, in (0, 1].

    Returns:
        AP in [0, 1]; nan when the cases hold no reference lesion.
    """
    tp, fp, n_ref = _operating_points(cases, iou_threshold)
    if n_ref == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    recall = tp / n_ref
    precision = tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def froc_sensitivities(
    cases: Sequence[CaseDetections],
    fp_per_case: Sequence[float] = FROC_FP_PER_CASE,
    iou_threshold: float = 0.1,
) -> dict[float, float]:
    """FROC: sensitivity at given average numbers of false positives per case (module docstring).

    Args:
        cases: the ``CaseDetections`` of every case (cases without lesions count in FP per case).
        fp_per_case: the target FP-per-case rates.
        iou_threshold: minimum IoU of a hit, in (0, 1].

    Returns:
        ``{rate: sensitivity}``; nan values when the cases hold no reference lesion.
    """
    if not all(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in fp_per_case):
        raise ConfigError(f"fp_per_case must be finite numbers >= 0, got {tuple(fp_per_case)!r}")
    tp, fp, n_ref = _operating_points(cases, iou_threshold)
    if n_ref == 0:
        return {float(t): float("nan") for t in fp_per_case}
    sensitivity = np.r_[0.0, tp / n_ref]  # the point above every score: no detection, no false positive
    rate = np.r_[0.0, fp / len(cases)]
    return {float(t): float(sensitivity[rate <= t].max()) for t in fp_per_case}
