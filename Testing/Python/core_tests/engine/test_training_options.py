"""Training options added for real-data training on a CPU: channels-last memory format, LR warm-up,
and whole-case validation (the learning-curve metric)."""

import numpy as np
import pytest
import torch
from pipeline_helpers import PHANTOM_PATCH, quick_training_config

from MaskMedCore.config import ModelConfig
from MaskMedCore.data.preprocessed_store import PreprocessedCase
from MaskMedCore.engine.case_validation import validate_cases
from MaskMedCore.engine.distributed import DistributedContext
from MaskMedCore.engine.lr_schedule import PerGroupPolyLR
from MaskMedCore.engine.trainer import _warm_up, train
from MaskMedCore.metrics import dice_score
from MaskMedCore.models.build import build_model
from MaskMedCore.models.outputs import semantic_probs


def test_channels_last_trains_like_the_contiguous_layout(tmp_path, phantom_dataset):
    """Same seed, same batches: the memory format changes float rounding only."""
    results = []
    for channels_last in (False, True):
        cfg = quick_training_config(epochs=1, iterations_per_epoch=2, channels_last=channels_last, augment=False)
        results.append(
            train(
                phantom_dataset,
                tmp_path / f"run_{channels_last}",
                cfg,
                preprocessed_dir=tmp_path / "prep",
                patch_size=PHANTOM_PATCH,
                progress="none",
            )
        )
    a, b = (r.history[0]["train_loss"] for r in results)
    assert a == pytest.approx(b, rel=1e-4)
    assert results[0].history[0]["iteration"] == 2


def test_warm_up_ramps_every_group_linearly_then_hands_back_to_poly():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [net.weight], "lr_scale": 1.0}, {"params": [net.bias], "lr_scale": 0.1}], lr=1)
    sched = PerGroupPolyLR(opt, 1e-2, max_epochs=10)
    _warm_up(opt, sched, epoch=0, iteration=0, warmup=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25e-2, 0.25e-3])
    _warm_up(opt, sched, epoch=1, iteration=2, warmup=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75 * sched.lr_at(1))
    _warm_up(opt, sched, epoch=1, iteration=4, warmup=4)  # the trainer's last call: plain poly again
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([sched.lr_at(1), sched.lr_at(1, 0.1)])


def test_case_validation_is_the_mean_per_case_dice_of_whole_case_predictions():
    """Cases no larger than the patch are one tile: a plain forward pass of the padded case is the reference.
    Class 2 is absent from both prediction and reference of one case there, so that case must not count for it."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", 1, 3, head="pointwise", bridge="none", masked_attention=False)
    model = build_model(cfg).eval()
    model.deep_supervision = False
    patch = (16, 16, 16)
    rng = np.random.default_rng(0)
    cases = []
    for i, shape in enumerate(((12, 16, 10), (16, 9, 14), (7, 16, 16))):
        image = rng.normal(size=(1, *shape)).astype(np.float32)
        labels = rng.integers(0, 3 if i < 2 else 2, size=shape).astype(np.int16)
        cases.append(PreprocessedCase(f"c{i}", image, labels, {}, {}))

    got = validate_cases(lambda x: semantic_probs(model(x)), cases, patch, 3, torch.device("cpu"), DistributedContext())

    per_class = {1: [], 2: []}
    for case in cases:
        d, h, w = case.labels.shape
        x = torch.zeros(1, 1, *patch)
        x[0, :, :d, :h, :w] = torch.from_numpy(case.image)
        with torch.no_grad():
            pred = semantic_probs(model(x))[0, :, :d, :h, :w].argmax(0).numpy()
        for k in (1, 2):
            p, r = pred == k, case.labels == k
            if p.any() or r.any():
                per_class[k].append(dice_score(p, r))
    assert got == pytest.approx([np.mean(per_class[1]), np.mean(per_class[2])], abs=1e-9)
