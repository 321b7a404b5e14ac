"""Detection matching, average precision and FROC, against rankings computed on paper."""

import math

import numpy as np
import pytest

from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.metrics.detection import (
    CaseDetections,
    ScoredInstances,
    average_precision,
    detection_counts,
    detections_from_instances,
    detections_from_masks,
    froc_sensitivities,
    instances_from_label_map,
    match_detections,
)


def paper_cases():
    """Three cases, five lesions... as (scores, IoU with each lesion).

    case 1, 2 lesions: 0.9 hits lesion 1 (IoU 0.6); 0.8 grazes it (0.05); 0.7 overlaps lesion 2 by 0.3.
    case 2, 1 lesion: 0.85 misses; 0.6 hits (0.7).
    case 3, no lesion: 0.95 and 0.5 are false positives.
    """
    case1 = CaseDetections([0.9, 0.8, 0.7], [[0.6, 0.0], [0.05, 0.0], [0.0, 0.3]])
    case2 = CaseDetections([0.85, 0.6], [[0.0], [0.7]])
    case3 = CaseDetections([0.95, 0.5], np.zeros((2, 0)))
    return case1, case2, case3


def test_greedy_matching_follows_scores_then_iou():
    # Two predictions on one lesion: the higher score wins even with the lower IoU; the other is a FP.
    case = CaseDetections([0.4, 0.9], [[0.9], [0.5]])
    assert match_detections(case, 0.5).tolist() == [False, True]
    assert detection_counts(case, 0.5) == (1, 1, 0)
    # One prediction over two lesions takes the higher IoU; the next takes what is left if good enough.
    case = CaseDetections([0.9, 0.8], [[0.3, 0.6], [0.2, 0.55]])
    assert match_detections(case, 0.25).tolist() == [True, False]  # 0.2 < 0.25 for the free lesion 1
    assert match_detections(case, 0.1).tolist() == [True, True]
    assert detection_counts(case, 0.1) == (2, 0, 0)
    # Equal scores keep the given order; IoU equal to the threshold matches (COCO's >=).
    case = CaseDetections([1.0, 1.0], [[0.5], [0.5]])
    assert match_detections(case, 0.5).tolist() == [True, False]


def test_counts_at_each_threshold():
    case1, case2, case3 = paper_cases()
    assert detection_counts(case1, 0.1) == (2, 1, 0)
    assert detection_counts(case1, 0.5) == (1, 2, 1)
    assert detection_counts(case3, 0.1) == (0, 2, 0)
    assert detection_counts(CaseDetections(np.zeros(0), np.zeros((0, 3))), 0.1) == (0, 0, 3)


def test_average_precision_on_paper():
    case1, case2, _ = paper_cases()
    # IoU 0.25, ranked: 0.9 TP, 0.85 FP, 0.8 FP, 0.7 TP, 0.6 TP over 3 lesions.
    # (recall, precision): (1/3, 1), (1/3, 1/2), (1/3, 1/3), (2/3, 1/2), (1, 3/5).
    # Envelope: 1 up to recall 1/3, then 3/5: AP = 1/3 + 1/3 * 3/5 + 1/3 * 3/5 = 11/15.
    assert average_precision([case1, case2], 0.25) == pytest.approx(11 / 15)
    # IoU 0.5: 0.7 becomes a FP. (1/3, 1) ... (2/3, 2/5): AP = 1/3 + 1/3 * 2/5 = 7/15.
    assert average_precision([case1, case2], 0.5) == pytest.approx(7 / 15)


def test_average_precision_with_a_case_without_lesions():
    # IoU 0.25, ranked: 0.95 FP, 0.9 TP, 0.85 FP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP.
    # Precision at recall 1/3, 2/3, 1: 1/2, 2/5, 3/6; envelope 1/2 everywhere: AP = 1/2.
    assert average_precision(paper_cases(), 0.25) == pytest.approx(0.5)


def test_tied_scores_enter_together():
    # Every score 1.0 (a plain label map): one point, AP = precision x recall, whatever the order.
    iou = np.array([[0.8, 0.0], [0.0, 0.0], [0.0, 0.6]])
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        case = CaseDetections(np.ones(3), iou[order])
        assert average_precision([case], 0.5) == pytest.approx(2 / 3 * 1.0)
    missed = CaseDetections(np.ones(1), [[0.0, 0.0]])
    assert average_precision([missed, CaseDetections(np.ones(3), iou)], 0.5) == pytest.approx(2 / 4 * 2 / 4)


def test_average_precision_edge_cases():
    assert math.isnan(average_precision([CaseDetections([0.5], np.zeros((1, 0)))], 0.5))  # no lesion
    assert math.isnan(average_precision([], 0.5))
    assert average_precision([CaseDetections(np.zeros(0), np.zeros((0, 2)))], 0.5) == 0.0  # nothing predicted


def test_froc_on_paper():
    # IoU 0.1, 3 cases, 3 lesions. Operating points (FP/case, sensitivity), highest score first:
    # 0.95 (1/3, 0), 0.9 (1/3, 1/3), 0.85 (2/3, 1/3), 0.8 (1, 1/3), 0.7 (1, 2/3), 0.6 (1, 1), 0.5 (4/3, 1).
    sens = froc_sensitivities(paper_cases(), (0.25, 0.5, 1, 2, 4), iou_threshold=0.1)
    assert sens == pytest.approx({0.25: 0.0, 0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    default = froc_sensitivities(paper_cases()[:2])  # 2 cases: 0.85 -> 1/2, 0.8 -> 1 FP/case
    assert list(default) == [0.5, 1.0, 2.0, 4.0]
    assert default == pytest.approx({0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert all(math.isnan(v) for v in froc_sensitivities([paper_cases()[2]]).values())


def test_instances_from_label_map_scores():
    label_map = np.zeros((4, 4, 8), np.uint8)
    label_map[0:2, 0:2, 0:2] = 1  # component A, 8 voxels
    label_map[0, 0, 5:7] = 1  # component B, 2 voxels
    label_map[0, 0, 2] = 2  # class 2 touching A: joins it only in the region {1, 2}
    probabilities = np.zeros(label_map.shape)
    probabilities[0:2, 0:2, 0:2] = 0.2
    probabilities[1, 1, 1] = 0.9
    probabilities[0, 0, 5:7] = (0.4, 0.6)
    plain = instances_from_label_map(label_map, 1)
    assert plain.scores.tolist() == [1.0, 1.0] and int(plain.labels.max()) == 2
    assert instances_from_label_map(label_map, 1, probabilities).scores == pytest.approx([0.9, 0.6])
    mean = instances_from_label_map(label_map, 1, probabilities, score="mean")
    assert mean.scores == pytest.approx([(7 * 0.2 + 0.9) / 8, 0.5])
    assert len(instances_from_label_map(label_map, (1, 2)).scores) == 2
    assert np.count_nonzero(instances_from_label_map(label_map, (1, 2)).labels == 1) == 9
    with pytest.raises(ConfigError, match="score"):
        instances_from_label_map(label_map, 1, probabilities, score="median")
    with pytest.raises(DataError, match="shape"):
        instances_from_label_map(label_map, 1, probabilities[:2])


def test_iou_from_components_and_from_overlapping_masks():
    ref = np.zeros((6, 6, 16), bool)
    ref[0:4, 0:4, 0:4] = True  # lesion 1, 64 voxels
    ref[0:2, 0:2, 10:12] = True  # lesion 2, 8 voxels
    half = np.zeros_like(ref)
    half[0:4, 0:4, 0:2] = True  # 32 voxels inside lesion 1: IoU 0.5
    shifted = np.zeros_like(ref)
    shifted[0:2, 0:2, 11:13] = True  # 4 of 8 voxels on lesion 2: IoU 4 / 12
    labels = half.astype(np.int32) + 2 * shifted
    from_labels = detections_from_instances(ScoredInstances(labels, np.array([0.7, 0.4])), ref)
    assert from_labels.iou == pytest.approx(np.array([[0.5, 0.0], [0.0, 1 / 3]]))
    whole = ref.copy()
    whole[0:2, 0:2, 10:12] = False  # overlaps `half`: only possible as separate masks
    from_masks = detections_from_masks([half, whole, shifted], [0.7, 0.9, 0.4], ref)
    assert from_masks.iou == pytest.approx(np.array([[0.5, 0.0], [1.0, 0.0], [0.0, 1 / 3]]))
    assert detection_counts(from_masks, 0.5) == (1, 2, 1)  # whole (0.9) takes lesion 1 before half
    with pytest.raises(DataError, match="one score per mask"):
        detections_from_masks([half], [0.5, 0.6], ref)
    with pytest.raises(DataError, match="shape"):
        detections_from_masks([half[:3]], [0.5], ref)


def test_bad_inputs():
    with pytest.raises(DataError, match=r"shape \(P, G\)"):
        CaseDetections([0.5, 0.4], [[0.1]])
    with pytest.raises(DataError, match="finite"):
        CaseDetections([float("nan")], [[0.1]])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        CaseDetections([0.5], [[1.5]])
    with pytest.raises(ConfigError, match="iou_threshold"):
        average_precision(paper_cases(), 0.0)
    with pytest.raises(ConfigError, match="fp_per_case"):
        froc_sensitivities(paper_cases(), (-1.0,))
