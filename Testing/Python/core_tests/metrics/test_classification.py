"""Accuracy and ROC AUC, against hand-counted pairs."""

import itertools

import numpy as np
import pytest

from MaskMedCore.errors import DataError
from MaskMedCore.metrics.classification import accuracy, roc_auc


def test_accuracy_skips_missing_labels():
    # Labelled cases 0, 1, 3, 4: right, wrong, right, wrong.
    assert accuracy([1, 0, None, 2, 1], [1, 1, 0, 2, 0]) == 0.5
    assert accuracy([True, False], [1, 1]) == 0.5
    with pytest.raises(DataError, match="no case has a label"):
        accuracy([None, None], [0, 1])
    with pytest.raises(DataError, match="y_pred has 1"):
        accuracy([0, 1], [0])


def test_binary_auc_counts_ties_as_half():
    # Positives 0.9, 0.6, 0.4; negatives 0.9, 0.4, 0.2. Pairs won: 0.9: 1/2 + 1 + 1; 0.6: 0 + 1 + 1;
    # 0.4: 0 + 1/2 + 1. Total 6 of 9.
    y = [1, 0, 1, 0, 1, 0]
    scores = [0.9, 0.9, 0.6, 0.4, 0.4, 0.2]
    assert roc_auc(y, scores) == pytest.approx(6 / 9)
    # A missing label drops the case and its score, however high.
    assert roc_auc([None, *y], [0.99, *scores]) == pytest.approx(6 / 9)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_binary_auc_equals_brute_force_pair_counting():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    scores = rng.integers(0, 6, 40) / 5  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[y == 1], scores[y == 0])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(y.tolist(), scores) == pytest.approx(expected)


def test_multiclass_auc_is_the_one_vs_rest_macro_average():
    y = [0, 1, 2, 2]
    scores = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.1, 0.6, 0.3],
            [0.3, 0.6, 0.1],
            [0.1, 0.2, 0.7],
        ]
    )
    # class 0: 0.8 beats 0.1, 0.3, 0.1 -> 1. class 1: 0.6 vs 0.1, 0.6, 0.2 -> (1 + 1/2 + 1) / 3 = 5/6.
    # class 2: positives 0.1, 0.7 vs negatives 0.1, 0.3 -> (1/2 + 0 + 1 + 1) / 4 = 5/8.
    assert roc_auc(y, scores) == pytest.approx((1 + 5 / 6 + 5 / 8) / 3)


def test_undefined_auc_raises_a_value_error_naming_the_class():
    with pytest.raises(DataError, match=r"class 1 is undefined: 3 positive and 0 negative"):
        roc_auc([1, 1, None, 1], [0.2, 0.4, 0.1, 0.9])
    with pytest.raises(ValueError, match=r"class 2 \(one-vs-rest\) is undefined: 0 positive"):
        roc_auc([0, 1, 1], np.full((3, 3), 0.3))
    with pytest.raises(DataError, match=r"labels \[2\]"):
        roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="nan or inf"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataError, match="integer class labels"):
        roc_auc([0.5, 1], [0.1, 0.2])
