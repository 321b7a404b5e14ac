"""The losses on 2D images (issue 13): (B, H, W) labels and (B, Q, H, W) mask logits through the same code
as volumes. Point sampling is checked against bilinear values worked out by hand; targets, matching and
the dense set criterion against the 3D code on a depth-1 volume (which must give the same numbers); the
coupled loss and the pseudo-Dice against inline recomputations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.engine.pseudo_dice import PseudoDice
from MaskMedCore.errors import DataError
from MaskMedCore.losses import CoupledCriterion, SetCriterion, soft_dice_loss
from MaskMedCore.losses.common import check_output
from MaskMedCore.losses.matcher import HungarianMatcher
from MaskMedCore.losses.point_sampling import importance_points, point_sample, uniform_points
from MaskMedCore.losses.targets import (
    build_targets,
    check_label_map,
    downsample_labels,
    resize_masks,
    segment_targets,
    stage_targets,
)
from MaskMedCore.models.outputs import MaskMedOutput

SIZES_2D = [(4, 4), (8, 8), (16, 16)]
"""Three decoder stages of a 2D network, coarsest first; the last is the input resolution."""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def output_of(cls: list[torch.Tensor], masks: list[torch.Tensor], decoupled: bool = True) -> MaskMedOutput:
    B, Q = cls[-1].shape[:2]
    return MaskMedOutput(
        class_logits=cls[-1],
        mask_logits=masks,
        stage_class_logits=cls,
        class_embeddings=torch.zeros(B, Q, 4),
        mask_embeddings=torch.zeros(B, Q, 4),
        decoupled=decoupled,
    )


def random_leaves(B: int, Q: int, K: int, sizes, seed: int = 0, decoupled: bool = True):
    """Per-stage class logits (B, Q, K+1) and mask logits (B, Q, *size), as plain tensors (no grad yet)."""
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(B, Q, K + 1, generator=g) for _ in sizes]
    if not decoupled:
        for c in cls:
            c[..., K] = 0.0
    masks = [torch.randn(B, Q, *s, generator=g) for s in sizes]
    return cls, masks


def leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def blob_labels_2d(B: int, K: int, size=(16, 16), seed: int = 0) -> torch.Tensor:
    """(B, H, W) label maps of axis-aligned rectangles of classes 1..K-1 on background 0."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    labels = torch.zeros(B, H, W, dtype=torch.long)
    for b in range(B):
        for k in range(1, K):
            h, w = (int(torch.randint(0, n - n // 2, (1,), generator=g)) for n in size)
            labels[b, h : h + H // 2, w : w + W // 2] = k
    return labels


# ---------------------------------------------------------------- point sampling
def test_point_sample_2d_reads_pixel_centres_exactly():
    H, W = 3, 5
    image = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W)
    hh, ww = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centres = torch.stack([(ww.flatten() + 0.5) / W, (hh.flatten() + 0.5) / H], -1)  # (P, 2) as (x, y)
    values = point_sample(image, centres[None])  # (1, 1, P)
    assert values.shape == (1, 1, H * W)
    torch.testing.assert_close(values[0, 0], image.flatten(), rtol=0, atol=1e-5)  # float rounding of c * S - 0.5


def test_point_sample_2d_matches_bilinear_values_worked_out_by_hand():
    # v[h, w] = 10 h + w on a 2 x 4 image; pixel index = c * S - 0.5 per axis.
    image = torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]]).reshape(1, 1, 2, 4)
    coords = torch.tensor(
        [
            [
                [0.5, 0.5],  # w = 1.5, h = 0.5: mean of v[0,1], v[0,2], v[1,1], v[1,2] = (1+2+11+12)/4
                [0.25, 0.75],  # w = 0.5, h = 1.0: (v[1,0] + v[1,1]) / 2
                [0.3125, 0.25],  # w = 0.75, h = 0.0: 0.25 v[0,0] + 0.75 v[0,1]
                [0.0, 0.25],  # w = -0.5, h = 0.0: half outside -> 0.5 * 0 (padding) + 0.5 v[0,0]
                [0.125, 0.0],  # w = 0.0, h = -0.5: 0.5 * 0 (padding) + 0.5 v[0,0]
                [0.875, 0.5],  # w = 3.0, h = 0.5: (v[0,3] + v[1,3]) / 2
            ]
        ]
    )
    expected = torch.tensor([6.5, 10.5, 0.75, 0.0, 0.0, 8.0])
    torch.testing.assert_close(point_sample(image, coords)[0, 0], expected, rtol=0, atol=1e-6)
    # (x, y) order: swapping the coordinates reads other values.
    assert not torch.allclose(point_sample(image, coords.flip(-1))[0, 0], expected)


def test_point_sample_2d_equals_3d_on_a_depth_one_volume_at_its_centre_plane():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 6, 7, generator=g)
    coords = torch.rand(2, 50, 2, generator=g)
    coords_3d = torch.cat([coords, torch.full((2, 50, 1), 0.5)], -1)  # z = 0.5 is depth index 0 exactly
    torch.testing.assert_close(point_sample(image, coords), point_sample(image[:, :, None], coords_3d))


def test_point_sample_rejects_coordinates_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\)"):
        point_sample(torch.zeros(1, 4, 4), torch.zeros(1, 3, 2))


def test_2d_uniform_and_importance_points_are_pairs_near_the_boundary():
    g = torch.Generator().manual_seed(3)
    points = uniform_points(4, 9, torch.device("cpu"), g, spatial_dims=2)
    assert points.shape == (4, 9, 2) and points.min() >= 0 and points.max() < 1
    # Logits 10 (w - 7.5): a ramp in x only, zero at x = 0.5 (between columns 7 and 8 of 16). Padding at the
    # border at most halves |logit|, so the most uncertain eighth of the candidates is near x = 0.5.
    logits = (10.0 * (torch.arange(16.0) - 7.5)).expand(2, 1, 16, 16)
    chosen = importance_points(logits, 32, oversample_ratio=8.0, importance_sample_ratio=1.0, generator=g)
    assert chosen.shape == (2, 32, 2)
    assert ((chosen[..., 0] - 0.5).abs() < 3 / 16).all()  # x: near the zero crossing
    assert ((chosen[..., 1] - 0.5).abs() > 0.25).any()  # y: anywhere


# ---------------------------------------------------------------- targets
def test_2d_instance_components_are_8_connected():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = labels[0, 1, 1] = labels[0, 2, 2] = 1  # a diagonal chain: one component
    labels[0, 4, 4] = labels[0, 4, 5] = 1  # a separate blob
    labels[0, 0, 5] = 2  # a semantic class: one segment however it is shaped
    (target,) = build_targets(labels, instance_classes=(1,))
    assert target.labels.tolist() == [0, 1, 1, 2]
    assert target.masks.shape == (4, 6, 6)
    assert target.masks[1].sum() == 3 and target.masks[1, 2, 2]  # the diagonal chain, first in raster order
    assert target.masks[2].sum() == 2 and target.masks[2, 4, 5]


def test_2d_targets_equal_the_3d_targets_of_a_depth_one_volume():
    labels = torch.zeros(2, 12, 12, dtype=torch.long)
    labels[0, 6:10, 6:10] = 3
    labels[0, 0, 0] = labels[0, 1, 1] = 3  # a diagonal pair apart from the rectangle
    labels[0, 0:3, 8:12] = 2
    labels[1, 10, 10] = labels[1, 11, 11] = labels[1, 5, 5] = 2
    labels[1, 2:6, 6:9] = 1
    counts = {(): [[1, 1, 1], [1, 1, 1]], (2, 3): [[1, 1, 2], [1, 1, 2]]}  # segments of classes 0, 1|2, 2|3
    for instance, expected in counts.items():
        flat = build_targets(labels, instance_classes=instance)
        deep = build_targets(labels[:, None], instance_classes=instance)
        for b, (t2, t3) in enumerate(zip(flat, deep, strict=True)):
            assert torch.equal(t2.labels, t3.labels)
            assert torch.equal(t2.masks, t3.masks[:, 0])
            assert t2.boxes is None
            assert torch.unique(t2.labels, return_counts=True)[1].tolist() == expected[b]


def test_2d_segments_resize_like_the_nearest_exact_downsampled_label_map():
    labels = blob_labels_2d(2, 3, (16, 16), seed=2)
    targets = build_targets(labels)
    small = downsample_labels(labels, (5, 8))
    assert small.shape == (2, 5, 8) and small.dtype == labels.dtype
    assert torch.equal(small, downsample_labels(labels[:, None], (1, 5, 8))[:, 0])
    for b, coarse in enumerate(stage_targets(labels, targets, (5, 8))):
        expected = segment_targets(small[b], coarse.labels)
        assert torch.equal(coarse.masks, expected.masks)
        assert torch.equal(resize_masks(targets[b].masks, (5, 8)), expected.masks)


def test_2d_label_checks():
    labels = torch.zeros(2, 4, 5, dtype=torch.long)
    assert check_label_map(labels, 3, (4, 5)).shape == (2, 4, 5)
    assert check_label_map(labels, 3, spatial_dims=2).dtype == torch.int64
    with pytest.raises(DataError, match=r"\(B, D, H, W\)"):
        check_label_map(labels, 3)  # 3D by default: a 3-D tensor is a volume without its batch axis
    with pytest.raises(DataError, match=r"\(B, H, W\) tensor to fit"):
        check_label_map(labels[:, None], 3, (4, 5))
    with pytest.raises(DataError, match="input resolution"):
        check_label_map(labels, 3, (8, 10))
    with pytest.raises(ValueError, match="3D-only"):
        build_targets(labels, with_boxes=True)


def test_check_output_rejects_stages_of_different_rank():
    cls, masks = random_leaves(1, 3, 2, [(1, 4, 4), (8, 8)])
    with pytest.raises(ValueError, match=r"stage 0: .* \(B, Q, H, W\)"):
        check_output(output_of(cls, masks), torch.zeros(1, 8, 8, dtype=torch.long), 2, decoupled=True)


# ---------------------------------------------------------------- matcher and set criterion
def hand_cost(cls: torch.Tensor, pred: torch.Tensor, tgt: torch.Tensor, labels: torch.Tensor, w=(1.0, 1.0, 1.0)):
    """Matching cost of (Q, K+1) class logits, (Q, P) mask logits and (N, P) targets, written out inline."""
    s = pred.sigmoid()
    bce = torch.stack(
        [F.binary_cross_entropy_with_logits(pred, t.expand_as(pred), reduction="none").mean(1) for t in tgt], 1
    )
    dice = 1 - (2 * s @ tgt.T + 1) / (s.sum(1)[:, None] + tgt.sum(1)[None] + 1)
    return -w[0] * cls.softmax(-1)[:, labels] + w[1] * bce + w[2] * dice


def test_2d_matcher_costs_equal_the_3d_costs_of_a_depth_one_volume():
    K, Q = 3, 5
    labels = blob_labels_2d(2, K, (8, 8), seed=3)
    cls, masks = random_leaves(2, Q, K, [(8, 8)], seed=3)
    matcher = HungarianMatcher(2.0, 5.0, 5.0)
    targets = build_targets(labels)
    flat = matcher.cost_matrices(cls[0], masks[0], targets)
    deep = matcher.cost_matrices(cls[0], masks[0][:, :, None], build_targets(labels[:, None]))
    for b, (c2, c3) in enumerate(zip(flat, deep, strict=True)):
        torch.testing.assert_close(c2, c3, rtol=0, atol=0)
        pred, tgt = masks[0][b].flatten(1), targets[b].masks.flatten(1).float()  # every pixel, row-major
        expected = hand_cost(cls[0][b], pred, tgt, targets[b].labels, (2.0, 5.0, 5.0))
        torch.testing.assert_close(c2, expected, rtol=1e-5, atol=1e-5)


def test_2d_point_matcher_reads_the_same_pairs_of_points_for_predictions_and_targets():
    K, Q, P = 3, 4, 200
    labels = blob_labels_2d(1, K, (8, 8), seed=4)
    g = torch.Generator().manual_seed(4)
    cls, masks = torch.randn(1, Q, K + 1, generator=g), torch.randn(1, Q, 4, 4, generator=g)
    targets = build_targets(labels)
    costs = HungarianMatcher(1.0, 1.0, 1.0, num_points=P).cost_matrices(
        cls, masks, targets, torch.Generator().manual_seed(9)
    )
    # The same draw, read with torch's grid_sample directly.
    points = torch.rand((1, P, 2), generator=torch.Generator().manual_seed(9))
    grid = (2 * points - 1)[:, :, None, :]  # (1, P, 1, 2)
    pred = F.grid_sample(masks, grid, align_corners=False)[0, :, :, 0]  # (Q, P)
    tgt = F.grid_sample(targets[0].masks[None].float(), grid, align_corners=False)[0, :, :, 0]  # (N, P)
    expected = hand_cost(cls[0], pred, tgt, targets[0].labels)
    torch.testing.assert_close(costs[0], expected, rtol=1e-5, atol=1e-5)


def run_criterion(criterion, cls, masks, labels, decoupled=True):
    """Loss of fresh leaves and the gradients of every leaf (masks first, then class logits)."""
    mask_leaves, cls_leaves = leaves(masks), leaves(cls)
    result = criterion(output_of(cls_leaves, mask_leaves, decoupled), labels)
    result.total.backward()
    return result, [t.grad for t in mask_leaves + cls_leaves]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"matching": "per_stage", "instance_classes": (2,)},
        {"semantic_weight": 0.5},
    ],
)
def test_dense_2d_set_criterion_equals_the_3d_criterion_of_a_depth_one_volume(options):
    K, Q = 3, 6
    labels = blob_labels_2d(2, K, seed=5)
    labels[1, 0, 0] = labels[1, 1, 1] = 2  # a diagonal component of the instance class
    cls, masks = random_leaves(2, Q, K, SIZES_2D, seed=5)
    criterion = SetCriterion(K, **options)
    flat, flat_grads = run_criterion(criterion, cls, masks, labels)
    deep, deep_grads = run_criterion(criterion, cls, [m[:, :, None] for m in masks], labels[:, None])
    assert flat.terms.keys() == deep.terms.keys()
    for name, value in flat.terms.items():
        assert math.isclose(value, deep.terms[name], rel_tol=1e-6, abs_tol=1e-7), name
    for stage2, stage3 in zip(flat.stage_indices, deep.stage_indices, strict=True):
        for (p2, t2), (p3, t3) in zip(stage2, stage3, strict=True):
            assert torch.equal(p2, p3) and torch.equal(t2, t3)
    for g2, g3 in zip(flat_grads, deep_grads, strict=True):
        g3 = g3[:, :, 0] if g3.dim() == 5 else g3
        assert g2.shape == g3.shape and torch.isfinite(g2).all() and g2.abs().sum() > 0
        torch.testing.assert_close(g2, g3, rtol=1e-5, atol=1e-7)


def test_point_sampled_2d_mask_loss_is_bce_and_dice_on_2d_points():
    K, Q, P = 3, 5, 64
    labels = blob_labels_2d(2, K, (8, 8), seed=6)
    cls, masks = random_leaves(2, Q, K, [(8, 8)], seed=6)
    criterion = SetCriterion(K, loss_num_points=P, oversample_ratio=2.0, importance_sample_ratio=0.0)
    result = criterion(output_of(leaves(cls), leaves(masks)), labels, generator=torch.Generator().manual_seed(7))
    # By hand: the matched pairs, then importance_points' draws (2P candidates, none kept, then P uniform).
    targets = build_targets(labels)
    pred = torch.cat([masks[0][b, p] for b, (p, _) in enumerate(result.indices)])  # (M, H, W)
    tgt = torch.cat([targets[b].masks[t] for b, (_, t) in enumerate(result.indices)]).float()
    M = pred.shape[0]
    g = torch.Generator().manual_seed(7)
    torch.rand((M, 2 * P, 2), generator=g)
    grid = (2 * torch.rand((M, P, 2), generator=g) - 1)[:, :, None, :]  # (M, P, 1, 2)
    pred_p = F.grid_sample(pred[:, None], grid, align_corners=False)[:, 0, :, 0]  # (M, P)
    tgt_p = F.grid_sample(tgt[:, None], grid, align_corners=False)[:, 0, :, 0]
    num_masks = sum(t.num_segments for t in targets)
    bce = F.binary_cross_entropy_with_logits(pred_p, tgt_p, reduction="none").mean(1).sum() / num_masks
    s = pred_p.sigmoid()
    dice = (1 - (2 * (s * tgt_p).sum(1) + 1) / (s.sum(1) + tgt_p.sum(1) + 1)).sum() / num_masks
    assert math.isclose(result.terms["stage0/bce"], bce.item(), rel_tol=1e-5)
    assert math.isclose(result.terms["stage0/dice"], dice.item(), rel_tol=1e-5)


def test_point_sampled_2d_criterion_sends_gradients_to_every_stage():
    K, Q = 4, 6
    labels = blob_labels_2d(2, K, seed=8)
    cls, masks = random_leaves(2, Q, K, SIZES_2D, seed=8)
    criterion = SetCriterion(K, matcher_num_points=100, loss_num_points=50, semantic_weight=1.0)
    result, grads = run_criterion(criterion, cls, masks, labels)
    assert math.isfinite(result.total.item()) and result.total.item() > 0
    for grad in grads:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("options", [{"box_l1_weight": 1.0}, {"case_weight": 1.0}])
def test_2d_criterion_refuses_the_3d_only_terms(options):
    cls, masks = random_leaves(1, 3, 2, [(8, 8)])
    with pytest.raises(ValueError, match="3D-only"):
        SetCriterion(2, **options)(output_of(cls, masks), torch.zeros(1, 8, 8, dtype=torch.long))


# ---------------------------------------------------------------- coupled loss
def test_2d_soft_dice_matches_a_per_image_per_class_loop():
    K = 3
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, K, 3, 4, generator=g)
    labels = torch.randint(0, K, (2, 3, 4), generator=g)
    probs = logits.softmax(1)
    dices = []
    for b in range(2):
        for k in range(1, K):
            p, y = probs[b, k], (labels[b] == k).float()
            dices.append((2 * (p * y).sum() + 1e-5) / (p.sum() + y.sum() + 1e-5))
    torch.testing.assert_close(soft_dice_loss(logits, labels), 1 - torch.stack(dices).mean())


def test_2d_coupled_loss_is_ce_plus_soft_dice_computed_by_hand():
    # Point-wise head (M_cls = identity): the class logits are the mask logits. One 2 x 2 image, K = 3.
    K = 3
    z = torch.tensor([[[2.0, 0.0], [-1.0, 0.5]], [[0.0, 1.0], [0.0, 0.0]], [[-2.0, 0.5], [1.0, -0.5]]])  # (K, H, W)
    y = torch.tensor([[0, 1], [2, 2]])
    eye = torch.cat([torch.eye(K), torch.zeros(K, 1)], 1)[None]  # (1, Q=K, K+1)
    masks = z[None].clone().requires_grad_()
    result = CoupledCriterion(K)(output_of([eye], [masks], decoupled=False), y[None])
    ce, p = 0.0, {}
    for h in range(2):
        for w in range(2):
            exps = [math.exp(z[k, h, w].item()) for k in range(K)]
            for k in range(K):
                p[k, h, w] = exps[k] / sum(exps)
            ce -= math.log(p[int(y[h, w]), h, w]) / 4
    dice = 0.0
    for k in range(1, K):
        inter = sum(p[k, h, w] for h in range(2) for w in range(2) if y[h, w] == k)
        sum_p = sum(p[k, h, w] for h in range(2) for w in range(2))
        sum_y = int((y == k).sum())
        dice += (2 * inter + 1e-5) / (sum_y + sum_p + 1e-5) / (K - 1)
    assert math.isclose(result.terms["ce"], ce, rel_tol=1e-5)
    assert math.isclose(result.terms["dice"], 1 - dice, rel_tol=1e-5)
    result.total.backward()
    assert torch.isfinite(masks.grad).all() and masks.grad.abs().sum() > 0


def test_deep_supervised_2d_coupled_loss_equals_the_3d_loss_of_a_depth_one_volume():
    K, Q = 3, 5
    labels = blob_labels_2d(2, K, seed=10)
    cls, masks = random_leaves(2, Q, K, SIZES_2D, seed=10, decoupled=False)
    flat, flat_grads = run_criterion(CoupledCriterion(K), cls, masks, labels, decoupled=False)
    deep, deep_grads = run_criterion(
        CoupledCriterion(K), cls, [m[:, :, None] for m in masks], labels[:, None], decoupled=False
    )
    for name, value in flat.terms.items():
        assert math.isclose(value, deep.terms[name], rel_tol=1e-6), name
    for g2, g3 in zip(flat_grads, deep_grads, strict=True):
        g3 = g3[:, :, 0] if g3.dim() == 5 else g3
        assert torch.isfinite(g2).all() and g2.abs().sum() > 0
        torch.testing.assert_close(g2, g3, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- pseudo-Dice
def test_pseudo_dice_counts_2d_label_maps():
    target = torch.tensor([[[0, 1, 1], [2, 2, 0]]])  # (B=1, H=2, W=3)
    pred = torch.tensor([[[1, 1, 0], [2, 0, 0]]])
    meter = PseudoDice(3)
    meter.update(pred, target)
    # class 1: tp 1 (0,1), fp 1 (0,0), fn 1 (0,2); class 2: tp 1 (1,0), fp 0, fn 1 (1,1)
    assert meter.counts.tolist() == [[1, 1], [1, 0], [1, 1]]
    assert meter.dice() == [2 / 4, 2 / 3]
    deep = PseudoDice(3)
    deep.update(pred[:, None], target[:, None])
    assert torch.equal(meter.counts, deep.counts)
    with pytest.raises(ValueError, match="differ"):
        meter.update(pred, target[:, None])
