"""Set criterion of the decoupled head (MaskMed Eq. 6): minimum at a perfect prediction, an
independent recomputation, deep-supervision weights, matching reuse, and no NaN in edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.errors import DataError
from MaskMedCore.losses import SetCriterion, deep_supervision_weights
from MaskMedCore.losses.matcher import HungarianMatcher
from MaskMedCore.losses.targets import build_targets, downsample_labels

SIZES = [(4, 4, 4), (8, 8, 8), (16, 16, 16)]


def perfect_output(make_output, labels, Q, K, sizes=SIZES, L=20.0, seed=0):
    """Segment n of image b is predicted by query perm[b][n] at every stage, with margin L."""
    B = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    targets = build_targets(labels)
    cls = [torch.zeros(B, Q, K + 1) for _ in sizes]
    masks = [torch.full((B, Q, *s), -L) for s in sizes]
    perms = []
    for b, t in enumerate(targets):
        perm = torch.randperm(Q, generator=g)[: t.num_segments]
        perms.append(perm)
        for c in cls:
            c[b, :, K] = L  # unmatched queries say "no object"
        for s, size in enumerate(sizes):
            small = downsample_labels(labels, size)[b]
            for n, q in enumerate(perm.tolist()):
                masks[s][b, q] = torch.where(small == t.labels[n], L, -L)
                cls[s][b, q, K] = 0.0
                cls[s][b, q, t.labels[n]] = L
    out = make_output([c.requires_grad_() for c in cls], [m.requires_grad_() for m in masks], True)
    return out, perms


def leaves(out):
    return [*out.stage_class_logits, *out.mask_logits]


def test_deep_supervision_weights_halve_per_coarser_stage_and_sum_to_one():
    w = deep_supervision_weights(4, 0.5)
    assert w == pytest.approx([1 / 15, 2 / 15, 4 / 15, 8 / 15])
    assert all(w[i] == pytest.approx(w[i + 1] / 2) for i in range(3))
    assert sum(deep_supervision_weights(5, 0.5)) == pytest.approx(1.0)
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3, 1.0) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="decay"):
        deep_supervision_weights(3, 0.0)


def test_perfect_prediction_is_near_minimum_and_a_wrong_one_is_not(make_output, blob_labels):
    K, Q = 4, 6
    labels = blob_labels(2, K)
    labels[1] = 0  # only background in image 1
    out, perms = perfect_output(make_output, labels, Q, K)
    criterion = SetCriterion(K)
    result = criterion(out, labels)
    assert result.total.item() < 1e-4
    for b, (pred, tgt) in enumerate(result.indices):
        assert torch.equal(pred[tgt.argsort()], perms[b])
    # Wrong: every image's masks rolled by one query, class logits unchanged.
    wrong = make_output(out.stage_class_logits, [m.roll(1, dims=1) for m in out.mask_logits], True)
    assert criterion(wrong, labels).total.item() > 10.0


def test_single_stage_matches_an_independent_computation(make_output, random_output, blob_labels):
    K, Q = 3, 5
    out = random_output(2, Q, K, sizes=[(8, 8, 8)])
    labels = blob_labels(2, K, (8, 8, 8))
    labels[1][labels[1] == 2] = 0  # class 2 absent from image 1
    result = SetCriterion(K, class_weight=2.0, bce_weight=3.0, dice_weight=4.0, no_object_weight=0.1)(out, labels)
    targets = build_targets(labels)
    cls, masks = out.class_logits.detach(), out.mask_logits[0].detach()
    num_masks = sum(t.num_segments for t in targets)
    weight = torch.tensor([1.0] * K + [0.1])
    ce_sum, w_sum, bce, dice = 0.0, 0.0, 0.0, 0.0
    for b, (pred, tgt) in enumerate(result.indices):
        matched = dict(zip(pred.tolist(), tgt.tolist(), strict=True))
        for q in range(Q):
            y = targets[b].labels[matched[q]] if q in matched else K
            ce_sum += weight[y] * -torch.log_softmax(cls[b, q], -1)[y]
            w_sum += weight[y]
        for q, n in matched.items():
            x, t = masks[b, q].flatten(), targets[b].masks[n].flatten().float()
            bce += F.binary_cross_entropy_with_logits(x, t)
            s = x.sigmoid()
            dice += 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
    expected = 2.0 * ce_sum / w_sum + 3.0 * bce / num_masks + 4.0 * dice / num_masks
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.terms["stage0/class"] == pytest.approx((ce_sum / w_sum).item(), rel=1e-5)


def test_terms_add_up_with_the_deep_supervision_weights(random_output, blob_labels):
    K = 3
    result = SetCriterion(K)(random_output(2, 4, K), blob_labels(2, K))
    terms = result.terms
    assert terms["total"] == pytest.approx(terms["class"] + terms["bce"] + terms["dice"], rel=1e-5)
    w = deep_supervision_weights(3)
    for term, weight in (("class", 2.0), ("bce", 10.0), ("dice", 10.0)):
        assert terms[term] == pytest.approx(sum(w[s] * weight * terms[f"stage{s}/{term}"] for s in range(3)), rel=1e-5)
    assert result.total.item() == pytest.approx(terms["total"], rel=1e-6)


def test_final_matching_is_reused_and_per_stage_matches_each_stage(make_output, blob_labels):
    K, Q = 3, 4
    labels = blob_labels(1, K)
    out, _ = perfect_output(make_output, labels, Q, K)
    # The coarsest stage's queries are shuffled: its own best matching differs from the finest's.
    shuffled = [out.mask_logits[0][:, [1, 2, 3, 0]], *out.mask_logits[1:]]
    cls = [out.stage_class_logits[0][:, [1, 2, 3, 0]], *out.stage_class_logits[1:]]
    out = make_output(cls, shuffled, True)
    final = SetCriterion(K, matching="final")(out, labels)
    assert all(idx is final.indices for idx in final.stage_indices)
    per_stage = SetCriterion(K, matching="per_stage")(out, labels)
    targets = build_targets(labels)
    for s in range(3):
        expected = HungarianMatcher()(cls[s], shuffled[s], targets)
        assert all(torch.equal(a, b) for a, b in zip(per_stage.stage_indices[s][0], expected[0], strict=True))
    assert not torch.equal(per_stage.stage_indices[0][0][1], final.indices[0][1])
    assert per_stage.total.item() < 1e-3 < final.total.item()  # each stage is perfect under its own matching


CASES = {
    "only_background": dict(K=3, Q=4, bg_only=True),
    "absent_classes": dict(K=6, Q=6, keep=(0, 2)),
    "more_queries": dict(K=3, Q=8),
    "fewer_queries": dict(K=5, Q=2),
    "point_matcher": dict(K=3, Q=4, matcher_num_points=64),
    "point_loss": dict(K=3, Q=4, loss_num_points=32),
    "points_both": dict(K=4, Q=5, matcher_num_points=64, loss_num_points=32, bg_only=True),
    "per_stage": dict(K=3, Q=4, matching="per_stage", loss_num_points=16),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_edge_cases_give_finite_loss_and_gradients(case, random_output, blob_labels, generator):
    case = dict(case)
    K, Q = case.pop("K"), case.pop("Q")
    bg_only, keep = case.pop("bg_only", False), case.pop("keep", None)
    labels = blob_labels(2, K)
    if bg_only:
        labels[0] = 0
    if keep is not None:
        labels[~torch.isin(labels, torch.tensor(keep))] = 0
    out = random_output(2, Q, K, seed=7)
    result = SetCriterion(K, **case)(out, labels, generator)
    assert torch.isfinite(result.total) and result.total.dtype == torch.float32
    assert all(v == v for v in result.terms.values())  # no NaN
    result.total.backward()
    for t in leaves(out):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    for b, (pred, _) in enumerate(result.indices):
        assert len(pred) == min(Q, int(labels[b].unique().numel()))


def test_point_sampled_loss_is_reproducible_with_a_generator(random_output, blob_labels):
    K = 3
    criterion = SetCriterion(K, matcher_num_points=50, loss_num_points=40)
    out, labels = random_output(2, 4, K), blob_labels(2, K)
    a = criterion(out, labels, torch.Generator().manual_seed(11)).total
    b = criterion(out, labels, torch.Generator().manual_seed(11)).total
    c = criterion(out, labels, torch.Generator().manual_seed(12)).total
    assert a.item() == b.item() != c.item()


def test_num_masks_hook_scales_only_the_mask_terms(random_output, blob_labels):
    K = 3
    out, labels = random_output(2, 4, K), blob_labels(2, K)
    plain = SetCriterion(K)(out, labels).terms
    seen = []

    def reduce(count):
        seen.append(count.item())
        return count * 2

    hooked = SetCriterion(K, reduce_num_masks=reduce)(out, labels).terms
    assert seen == [2.0 * K]  # every class is present in both images
    assert hooked["class"] == pytest.approx(plain["class"])
    assert hooked["bce"] == pytest.approx(plain["bce"] / 2) and hooked["dice"] == pytest.approx(plain["dice"] / 2)


def test_runs_in_float32_under_autocast(make_output, blob_labels):
    K = 3
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(1, 4, K + 1, generator=g).bfloat16().requires_grad_() for _ in SIZES]
    masks = [torch.randn(1, 4, *s, generator=g).bfloat16().requires_grad_() for s in SIZES]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = SetCriterion(K)(make_output(cls, masks, True), blob_labels(1, K))
    assert result.total.dtype == torch.float32 and torch.isfinite(result.total)


def test_bad_inputs_are_named(make_output, random_output, blob_labels):
    K = 3
    out, labels = random_output(1, 4, K), blob_labels(1, K)
    with pytest.raises(ValueError, match="coupled head"):
        SetCriterion(K)(make_output(out.stage_class_logits, out.mask_logits, False), labels)
    with pytest.raises(ValueError, match="K\\+1 = 6"):
        SetCriterion(5)(out, labels)
    with pytest.raises(DataError, match="value 3"):
        SetCriterion(K)(out, torch.full_like(labels, 3))
    with pytest.raises(DataError, match="input resolution"):
        SetCriterion(K)(out, labels[:, :8, :8, :8])
    with pytest.raises(ValueError, match="per_stage"):
        cls = [out.stage_class_logits[0][:, :2], *out.stage_class_logits[1:]]
        mixed = make_output(cls, [out.mask_logits[0][:, :2], *out.mask_logits[1:]], True)
        SetCriterion(K, matching="final")(mixed, labels)
    with pytest.raises(ValueError, match="matching"):
        SetCriterion(K, matching="each")


def test_semantic_term_is_ce_plus_dice_of_the_composed_probabilities(make_output, blob_labels):
    """The optional semantic term: ~0 for a perfect prediction, equal to an independent recomputation for a
    random one, weighted into the total, and it leaves the set-loss terms as they were."""
    from MaskMedCore.models.outputs import decoupled_class_probs

    K, Q = 3, 3
    labels = blob_labels(2, K)
    plain, semantic = SetCriterion(K), SetCriterion(K, semantic_weight=0.5)
    out, _ = perfect_output(make_output, labels, Q, K)
    assert semantic(out, labels).terms["semantic"] < 1e-3

    g = torch.Generator().manual_seed(3)
    cls = [torch.randn(2, Q, K + 1, generator=g).requires_grad_() for _ in SIZES]
    masks = [torch.randn(2, Q, *s, generator=g).requires_grad_() for s in SIZES]
    out = make_output(cls, masks, True)
    a, b = plain(out, labels), semantic(out, labels)
    assert "semantic" not in a.terms
    for t in ("class", "bce", "dice"):
        assert a.terms[t] == pytest.approx(b.terms[t])
    expected = []
    for c, m in zip(cls, masks):
        probs = decoupled_class_probs(c.detach(), m.detach())
        target = downsample_labels(labels, tuple(probs.shape[2:]))
        ce = F.nll_loss(probs.clamp_min(1e-6).log(), target)
        onehot = F.one_hot(target, K).permute(0, 4, 1, 2, 3)[:, 1:].float()
        p = probs[:, 1:]
        dice = (2 * (p * onehot).sum((2, 3, 4)) + 1e-5) / (p.sum((2, 3, 4)) + onehot.sum((2, 3, 4)) + 1e-5)
        expected.append(float(ce + 1 - dice.mean()))
    w = deep_supervision_weights(len(SIZES), 0.5)
    assert [b.terms[f"stage{s}/semantic"] for s in range(len(SIZES))] == pytest.approx(expected, rel=1e-5)
    assert b.terms["semantic"] == pytest.approx(0.5 * sum(wi * e for wi, e in zip(w, expected)), rel=1e-5)
    assert b.terms["total"] == pytest.approx(a.terms["total"] + b.terms["semantic"], rel=1e-5)
    b.total.backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in cls + masks)
