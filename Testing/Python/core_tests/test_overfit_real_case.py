"""Learning works on real data: the ``tiny`` preset overfits one cropped BraTS case (2 channels, 5 classes).

A 32^3 crop centred on the tumour holds all four tumour classes. The batch is the crop and its
mirror image: batch 2 also keeps PyTorch's CPU Conv3d on its oneDNN path (batch-1 inputs of small
size fall back to a ~5x slower kernel). AdamW with one learning rate for every group is used
for speed; the paper's SGD recipe (CNN : Transformer = 1 : 0.1) belongs to the trainer.
"""

import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore import ModelConfig, build_criterion, build_model, semantic_probs

CASE = "brats_2013_pat0005_1"
CROP = 32
MAX_STEPS = 300
TARGET_DICE = 0.9


def _load_crop(folder):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{CASE}_label.nii.gz")))
    centre = np.argwhere(labels > 0).mean(0).astype(int)
    box = tuple(slice(c - CROP // 2, c - CROP // 2 + CROP) for c in centre)
    image = np.stack(
        [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{CASE}_{m}.nii.gz")))[box] for m in ("flair", "t1c")]
    )
    x = torch.from_numpy(image).float()[None]
    y = torch.from_numpy(labels[box].astype(np.int64))[None]
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y.flip(-1)])


def _foreground_dice(pred, ref, num_classes):
    scores = []
    for k in range(1, num_classes):
        a, b = pred == k, ref == k
        if b.any():
            scores.append(2 * (a & b).sum().item() / (a.sum() + b.sum()).item())
    return float(np.mean(scores)), scores


@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_preset_overfits_a_real_brats_crop(shared_data):
    x, y = _load_crop(shared_data / "brats2015_deepmedic")
    assert sorted(y.unique().tolist()) == [0, 1, 2, 3, 4], "the crop must contain every class"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = ModelConfig.preset("tiny", in_channels=2, num_classes=5)
        model = build_model(cfg)
    criterion = build_criterion(cfg)
    optimiser = torch.optim.AdamW(model.param_groups(3e-3, transformer_lr_ratio=1.0, weight_decay=0.0))
    gen = torch.Generator().manual_seed(0)
    start, history = time.perf_counter(), []
    for step in range(1, MAX_STEPS + 1):
        loss = criterion(model(x), y, generator=gen).total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                mean, per_class = _foreground_dice(semantic_probs(model(x)).argmax(1), y, cfg.num_classes)
            model.train()
            history.append((step, round(loss.item(), 3), round(mean, 3)))
            if mean >= TARGET_DICE:
                break
    elapsed = time.perf_counter() - start
    print(f"overfit: {history} in {elapsed:.1f} s; per-class Dice {np.round(per_class, 3).tolist()}")
    assert mean >= TARGET_DICE, f"mean foreground Dice {mean:.3f} < {TARGET_DICE} after {step} steps: {history}"
    assert history[0][1] > 3 * history[-1][1], "the loss should fall steeply while overfitting"
