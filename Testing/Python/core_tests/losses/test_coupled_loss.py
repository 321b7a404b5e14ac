"""Coupled heads' DC+CE loss (nnU-Net's DC_and_CE, do_bg=False) on coupled class logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.losses import CoupledCriterion, deep_supervision_weights, soft_dice_loss
from MaskMedCore.losses.targets import downsample_labels
from MaskMedCore.models.outputs import coupled_class_logits

SIZES = [(4, 4, 4), (8, 8, 8), (16, 16, 16)]


def pointwise_output(make_output, labels, K, L=30.0, sizes=SIZES):
    """nnU-Net's point-wise head: M_cls = identity, mask q = L * one-hot(class q) at every stage."""
    B = labels.shape[0]
    eye = torch.cat([torch.eye(K), torch.zeros(K, 1)], 1).expand(B, K, K + 1)  # (B, Q=K, K+1)
    cls = [eye.clone().requires_grad_() for _ in sizes]
    masks = []
    for size in sizes:
        small = downsample_labels(labels, size)
        masks.append((L * (2 * F.one_hot(small, K).permute(0, 4, 1, 2, 3).float() - 1)).requires_grad_())
    return make_output(cls, masks, False)


def test_perfect_semantic_logits_are_near_minimum(make_output, blob_labels):
    K = 4
    labels = blob_labels(2, K)
    labels[1][labels[1] == 3] = 0  # a foreground class absent from image 1
    criterion = CoupledCriterion(K)
    perfect = criterion(pointwise_output(make_output, labels, K), labels)
    assert perfect.total.item() < 1e-3
    assert perfect.indices is None and perfect.stage_indices is None
    wrong = criterion(pointwise_output(make_output, (labels + 1) % K, K), labels)
    assert wrong.total.item() > 10.0


def test_soft_dice_matches_a_per_image_per_class_loop():
    K = 4
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, K, 5, 6, 7, generator=g)
    labels = torch.randint(0, K - 1, (2, 5, 6, 7), generator=g)  # class K-1 absent everywhere
    probs = logits.softmax(1)
    dices = []
    for b in range(2):
        for k in range(1, K):  # background excluded
            p, y = probs[b, k], (labels[b] == k).float()
            dices.append((2 * (p * y).sum() + 1e-5) / (p.sum() + y.sum() + 1e-5))
    expected = 1 - torch.stack(dices).mean()
    torch.testing.assert_close(soft_dice_loss(logits, labels, 1e-5), expected)


def test_total_is_deep_supervised_ce_plus_dice(random_output, blob_labels):
    K, Q = 3, 5  # an mlp_cls-style head: more queries than classes, learned M_cls
    out, labels = random_output(2, Q, K, decoupled=False), blob_labels(2, K)
    result = CoupledCriterion(K)(out, labels)
    w = deep_supervision_weights(3)
    expected = 0.0
    for s, size in enumerate(SIZES):
        logits = coupled_class_logits(out.stage_class_logits[s], out.mask_logits[s]).detach()
        target = downsample_labels(labels, size)
        expected += w[s] * (F.cross_entropy(logits, target) + soft_dice_loss(logits, target))
    assert result.total.item() == pytest.approx(float(expected), rel=1e-5)
    assert result.terms["total"] == pytest.approx(result.terms["ce"] + result.terms["dice"], rel=1e-5)


@pytest.mark.parametrize("case", ["only_background", "absent_classes", "more_queries"])
def test_edge_cases_give_finite_loss_and_gradients(case, random_output, blob_labels):
    K, Q = (5, 8) if case == "more_queries" else (5, 5)
    labels = blob_labels(2, K)
    if case == "only_background":
        labels[:] = 0
    if case == "absent_classes":
        labels[labels >= 3] = 0
    out = random_output(2, Q, K, decoupled=False, seed=3)
    result = CoupledCriterion(K)(out, labels)
    assert torch.isfinite(result.total) and result.total.dtype == torch.float32
    result.total.backward()
    for t in [*out.stage_class_logits, *out.mask_logits]:
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_runs_in_float32_under_autocast_and_rejects_decoupled_outputs(make_output, random_output, blob_labels):
    K = 3
    out = random_output(1, K, K, decoupled=False)
    half = make_output([c.bfloat16() for c in out.stage_class_logits], [m.bfloat16() for m in out.mask_logits], False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = CoupledCriterion(K)(half, blob_labels(1, K))
    assert result.total.dtype == torch.float32 and torch.isfinite(result.total)
    with pytest.raises(ValueError, match="decoupled head"):
        CoupledCriterion(K)(make_output(out.stage_class_logits, out.mask_logits, True), blob_labels(1, K))
