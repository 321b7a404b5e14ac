"""Multi-task plumbing of training: dataset declarations -> model overrides, case targets -> batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.data.loader import batch_tensors
from MaskMedCore.data.multitask_spec import MultiTaskSpec
from MaskMedCore.data.sampling import PatchSampler
from MaskMedCore.engine.multitask_setup import case_targets_for, multitask_overrides
from MaskMedCore.errors import DataError

LABELS = ["background", "liver", "lesion"]
TASKS = (("lesion_count", ("none", "one", "several")),)


def spec(**kwargs) -> MultiTaskSpec:
    base = dict(
        instance_classes=("lesion",),
        case_tasks=TASKS,
        case_labels={"a": {"lesion_count": "one"}, "c": {"lesion_count": "several"}},
    )
    base.update(kwargs)
    return MultiTaskSpec(**base)


def test_dataset_declarations_become_overrides_unless_the_user_gives_them():
    assert multitask_overrides(spec(), LABELS, None) == {"instance_classes": (2,), "case_tasks": TASKS}
    # the user's fields win: the single-task baselines switch the declarations off
    off = multitask_overrides(spec(), LABELS, {"instance_classes": [], "case_tasks": []})
    assert off == {"instance_classes": (), "case_tasks": []}
    # --instance-classes gives names; --set gives values
    assert multitask_overrides(MultiTaskSpec(), LABELS, {"instance_classes": ["liver"]})["instance_classes"] == (1,)
    assert multitask_overrides(MultiTaskSpec(), LABELS, {"instance_classes": [2]})["instance_classes"] == (2,)
    with pytest.raises(DataError, match="'tumour' is not a label.*background"):
        multitask_overrides(MultiTaskSpec(), LABELS, {"instance_classes": ["tumour"]})
    assert multitask_overrides(MultiTaskSpec(), LABELS, {"bridge": "none"}) == {"bridge": "none"}


def test_case_targets_follow_the_case_order_and_refuse_a_changed_dataset(tmp_path: Path):
    cfg = ModelConfig.preset("tiny", 1, 3, case_tasks=TASKS)
    targets = case_targets_for(cfg, spec(), ["c", "b", "a"], tmp_path)
    assert targets.tolist() == [[2], [-1], [1]]
    assert case_targets_for(ModelConfig.preset("tiny", 1, 3), spec(), ["a"], tmp_path) is None
    other = (("lesion_count", ("none", "some")),)
    with pytest.raises(DataError, match="case_labels tasks are .*but the model predicts"):
        case_targets_for(cfg, spec(case_tasks=other, case_labels={}), ["a"], tmp_path)
    with pytest.raises(DataError, match="none of the 1 training cases has a case label"):
        case_targets_for(cfg, spec(), ["b"], tmp_path)


class _Case:
    def __init__(self, value: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.image = np.full((1, 8, 8, 8), value, np.float32)
        self.labels = (rng.random((8, 8, 8)) > 0.7).astype(np.int16)
        self.class_locations = {1: np.argwhere(self.labels == 1)}


def test_training_batches_carry_each_samples_case_targets_with_the_same_draws():
    cases = [_Case(float(i), i) for i in range(3)]
    targets = np.array([[0, 1], [1, -1], [2, 0]], dtype=np.int64)
    plain = PatchSampler(cases, (8, 8, 8), (8, 8, 8), 4)
    tagged = PatchSampler(cases, (8, 8, 8), (8, 8, 8), 4, case_targets=targets)
    images, labels = plain.training_batch(np.random.default_rng(3))
    images_t, labels_t, case_t = tagged.training_batch(np.random.default_rng(3))
    np.testing.assert_array_equal(images, images_t)  # the targets change no random draw
    np.testing.assert_array_equal(labels, labels_t)
    # every image is constant = its case index, so the row must be that case's targets
    np.testing.assert_array_equal(case_t, targets[images_t[:, 0, 0, 0, 0].astype(int)])
    tensors = batch_tensors((images_t, labels_t, case_t))
    assert [t.dtype for t in tensors] == [torch.float32, torch.int64, torch.int64]
    with pytest.raises(ValueError, match="case_targets must be"):
        PatchSampler(cases, (8, 8, 8), (8, 8, 8), 4, case_targets=targets[:2])
