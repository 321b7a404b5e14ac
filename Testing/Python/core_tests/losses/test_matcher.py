"""Hungarian matcher: optimal assignment (brute force), the cost matrix itself, edge cases."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.losses.matcher import HungarianMatcher, solve_assignment
from MaskMedCore.losses.point_sampling import point_sample_3d, uniform_points
from MaskMedCore.losses.targets import build_targets, segment_targets


def brute_force_min(cost: torch.Tensor) -> float:
    """Minimum total cost over all one-to-one assignments of min(Q, N) pairs."""
    Q, N = cost.shape
    if Q >= N:
        return min(sum(cost[q, n].item() for n, q in enumerate(qs)) for qs in itertools.permutations(range(Q), N))
    return min(sum(cost[q, n].item() for q, n in enumerate(ns)) for ns in itertools.permutations(range(N), Q))


def check_valid(pred, tgt, Q, N):
    assert pred.dtype == tgt.dtype == torch.int64
    assert len(pred) == len(tgt) == min(Q, N)
    assert len(set(pred.tolist())) == len(pred) and len(set(tgt.tolist())) == len(tgt)
    assert all(0 <= q < Q for q in pred.tolist()) and all(0 <= n < N for n in tgt.tolist())


@pytest.mark.parametrize(("Q", "N"), [(1, 1), (3, 2), (4, 4), (5, 3), (6, 6), (6, 1), (3, 5), (2, 6)])
def test_solve_assignment_is_optimal(Q, N):
    g = torch.Generator().manual_seed(Q * 10 + N)
    for _ in range(5):
        cost = torch.randn(Q, N, generator=g)
        pred, tgt = solve_assignment(cost)
        check_valid(pred, tgt, Q, N)
        assert cost[pred, tgt].sum().item() == pytest.approx(brute_force_min(cost), abs=1e-5)


def test_solve_assignment_rejects_non_finite_cost():
    with pytest.raises(FloatingPointError, match="not finite"):
        solve_assignment(torch.tensor([[0.0, float("nan")]]))


def independent_cost(cls_logits, mask_logits, labels, masks, wc, wb, wd):
    """Per-pair cost with plain PyTorch ops, one (q, n) at a time."""
    Q, N = cls_logits.shape[0], labels.shape[0]
    cost = torch.zeros(Q, N)
    for q in range(Q):
        for n in range(N):
            x, t = mask_logits[q].flatten(), masks[n].flatten().float()
            p = torch.softmax(cls_logits[q], -1)[labels[n]]
            bce = F.binary_cross_entropy_with_logits(x, t)
            s = torch.sigmoid(x)
            dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
            cost[q, n] = -wc * p + wb * bce + wd * dice
    return cost


@pytest.mark.parametrize("pred_size", [(8, 8, 8), (4, 4, 4)])
def test_cost_matrix_matches_per_pair_computation(pred_size, blob_labels):
    K, Q = 4, 5
    labels = blob_labels(2, K, (8, 8, 8))
    labels[1, :, :, :4] = 0  # image 1 has fewer segments
    g = torch.Generator().manual_seed(1)
    cls = torch.randn(2, Q, K + 1, generator=g)
    masks = 3 * torch.randn(2, Q, *pred_size, generator=g)
    targets = build_targets(labels)
    matcher = HungarianMatcher(class_weight=2.0, bce_weight=5.0, dice_weight=7.0)
    costs = matcher.cost_matrices(cls, masks, targets)
    for b, t in enumerate(targets):
        # a coarser prediction is compared with nearest-exact downsampled targets
        small = F.interpolate(t.masks[:, None].float(), size=pred_size, mode="nearest-exact")[:, 0]
        expected = independent_cost(cls[b], masks[b], t.labels, small, 2.0, 5.0, 7.0)
        assert costs[b].shape == (Q, t.num_segments) and costs[b].dtype == torch.float32
        torch.testing.assert_close(costs[b], expected, rtol=1e-4, atol=1e-4)


def test_point_cost_matches_per_pair_computation_on_the_same_points(blob_labels):
    K, Q, P = 3, 4, 300
    labels = blob_labels(1, K, (8, 8, 8))
    g = torch.Generator().manual_seed(2)
    cls = torch.randn(1, Q, K + 1, generator=g)
    masks = torch.randn(1, Q, 4, 4, 4, generator=g)
    targets = build_targets(labels)
    costs = HungarianMatcher(1.0, 1.0, 1.0, num_points=P).cost_matrices(
        cls, masks, targets, torch.Generator().manual_seed(9)
    )
    points = uniform_points(1, P, torch.device("cpu"), torch.Generator().manual_seed(9))  # the same draw
    pred_p = point_sample_3d(masks, points)[0]  # (Q, P)
    tgt_p = point_sample_3d(targets[0].masks[None].float(), points)[0]  # (N, P), soft at edges
    expected = independent_cost(cls[0], pred_p, targets[0].labels, tgt_p, 1.0, 1.0, 1.0)
    torch.testing.assert_close(costs[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_points", [None, 256])
def test_matcher_is_optimal_for_its_cost_and_recovers_a_permutation(num_points, blob_labels):
    K, Q = 4, 6
    labels = blob_labels(2, K, (8, 8, 8))
    targets = build_targets(labels)
    g = torch.Generator().manual_seed(3)
    perm = [torch.randperm(Q, generator=g)[: t.num_segments] for t in targets]
    # Queries perm[b][n] predict segment n well (with noise); the others predict noise.
    cls = torch.randn(2, Q, K + 1, generator=g)
    masks = torch.randn(2, Q, 8, 8, 8, generator=g)
    for b, t in enumerate(targets):
        for n, q in enumerate(perm[b].tolist()):
            masks[b, q] = torch.where(t.masks[n], 6.0, -6.0) + torch.randn(8, 8, 8, generator=g)
            cls[b, q, t.labels[n]] += 4.0
    matcher = HungarianMatcher(num_points=num_points)
    gen = torch.Generator().manual_seed(5)
    indices = matcher(cls, masks, targets, gen)
    costs = matcher.cost_matrices(cls, masks, targets, torch.Generator().manual_seed(5))  # same points
    for b, (pred, tgt) in enumerate(indices):
        check_valid(pred, tgt, Q, targets[b].num_segments)
        assert costs[b][pred, tgt].sum().item() == pytest.approx(brute_force_min(costs[b]), abs=1e-4)
        assert torch.equal(pred[tgt.argsort()], perm[b])  # segment n -> query perm[b][n]


def test_zero_targets_and_fewer_queries_than_segments():
    label_map = torch.arange(6).repeat_interleave(8).view(3, 4, 4) % 6  # 6 classes present
    full = segment_targets(label_map)
    empty = segment_targets(label_map, classes=torch.empty(0, dtype=torch.long))
    g = torch.Generator().manual_seed(4)
    cls, masks = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 3, 4, 4, generator=g)
    (p0, t0), (p1, t1) = HungarianMatcher()(cls, masks, [full, empty])
    check_valid(p0, t0, 3, 6)
    assert p1.numel() == 0 and t1.numel() == 0 and p1.dtype == torch.int64


def test_matcher_runs_in_float32_without_grad():
    cls = torch.randn(1, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    masks = torch.randn(1, 3, 4, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    targets = build_targets(torch.randint(0, 3, (1, 4, 4, 4), generator=torch.Generator().manual_seed(0)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        costs = HungarianMatcher().cost_matrices(cls, masks, targets)
    assert costs[0].dtype == torch.float32 and not costs[0].requires_grad
