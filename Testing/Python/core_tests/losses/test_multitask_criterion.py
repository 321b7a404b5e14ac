"""Box and case terms of the set criterion (issue 12): values, unknown labels, box-aware matching, a few
optimisation steps of a tiny model, and the old configuration left bit-identical."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.config import ModelConfig
from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.losses import SetCriterion, build_criterion
from MaskMedCore.losses.box_losses import box_l1
from MaskMedCore.losses.case_loss import case_loss
from MaskMedCore.losses.matcher import HungarianMatcher
from MaskMedCore.losses.targets import build_targets
from MaskMedCore.models.build import build_model

SIZES = [(4, 4, 4), (8, 8, 8), (16, 16, 16)]


def with_tasks(out, seed=0, task_classes=(2, 3)):
    """``out`` plus random sigmoid boxes at every stage and case logits (leaf tensors)."""
    g = torch.Generator().manual_seed(seed)
    B, Q = out.class_logits.shape[:2]
    stage_boxes = [torch.rand(B, Q, 6, generator=g).clamp(0.05, 0.95).requires_grad_() for _ in out.mask_logits]
    case = tuple(torch.randn(B, c, generator=g).requires_grad_() for c in task_classes)
    return dataclasses.replace(out, boxes=stage_boxes[-1], stage_boxes=stage_boxes, case_logits=case)


def two_lesions(size=8):
    """(1, S, S, S): background, lesion A (class 1) near the origin, lesion B (class 1) near the far corner."""
    labels = torch.zeros(1, size, size, size, dtype=torch.long)
    labels[0, 1:3, 1:3, 1:3] = 1
    labels[0, 5:7, 5:7, 5:7] = 1
    return labels


def ambiguous_output(make_output, labels, L=6.0):
    """Query 0 is background; queries 1 and 2 both cover both lesions, query 1 slightly more lesion A, so
    the mask cost alone prefers (1 -> A, 2 -> B). Query 1's box is lesion B's and query 2's lesion A's."""
    K, Q = 2, 3
    targets = build_targets(labels, instance_classes=(1,), with_boxes=True)[0]
    lesions = labels[0] == 1
    masks = torch.full((1, Q, *labels.shape[1:]), -L)
    masks[0, 0] = torch.where(labels[0] == 0, L, -L)
    masks[0, 1] = torch.where(lesions, L, -L)
    masks[0, 1][targets.masks[1]] = L + 1.0
    masks[0, 2] = torch.where(lesions, L, -L)
    cls = torch.zeros(1, Q, K + 1)
    cls[0, 0, 0] = cls[0, 1, 1] = cls[0, 2, 1] = L
    out = make_output([cls], [masks], True)
    boxes = torch.stack([targets.boxes[0], targets.boxes[2], targets.boxes[1]])[None]  # (1, Q, 6)
    return dataclasses.replace(out, boxes=boxes, stage_boxes=[boxes]), targets


def test_box_and_case_terms_are_logged_finite_and_differentiable(random_output, blob_labels, generator):
    K, Q = 4, 6
    out = with_tasks(random_output(2, Q, K))
    criterion = SetCriterion(K, instance_classes=(3,), box_l1_weight=5.0, box_giou_weight=2.0, case_weight=1.0)
    result = criterion(out, blob_labels(2, K), generator=generator, case_targets=torch.tensor([[0, 2], [1, -1]]))
    expected = {"total", "class", "bce", "dice", "box_l1", "box_giou", "case"}
    expected |= {f"stage{s}/{t}" for s in range(3) for t in ("class", "bce", "dice", "box_l1", "box_giou")}
    assert set(result.terms) == expected  # no per-stage case term: it reads the final queries only
    assert all(torch.isfinite(torch.tensor(v)) for v in result.terms.values())
    assert result.terms["box_l1"] > 0 and result.terms["box_giou"] > 0 and result.terms["case"] > 0
    parts = sum(result.terms[t] for t in ("class", "bce", "dice", "box_l1", "box_giou", "case"))
    assert result.terms["total"] == pytest.approx(parts, rel=1e-5)
    result.total.backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in out.stage_boxes)
    assert all(c.grad.abs().sum() > 0 for c in out.case_logits)


def test_case_loss_averages_labelled_tasks_and_ignores_unknown():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 2, generator=g).requires_grad_(), torch.randn(3, 4, generator=g).requires_grad_())
    targets = torch.tensor([[1, -1], [-1, 3], [0, -1]])
    expected = (
        F.cross_entropy(logits[0][[0, 2]], torch.tensor([1, 0])) + F.cross_entropy(logits[1][[1]], torch.tensor([3]))
    ) / 2
    assert case_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    # A task with no labelled item is left out of the mean, not counted as 0.
    only_first = torch.tensor([[1, -1], [-1, -1], [0, -1]])
    assert case_loss(logits, only_first).item() == pytest.approx(
        F.cross_entropy(logits[0][[0, 2]], torch.tensor([1, 0])).item()
    )
    # Changing an unknown item's logits changes nothing.
    moved = (logits[0].detach().clone(), logits[1].detach().clone())
    moved[0][1] += 5.0
    assert case_loss(moved, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    # Nothing labelled: a zero that still reaches every logit.
    zero = case_loss(logits, torch.full((3, 2), -1))
    zero.backward()
    assert zero.item() == 0.0 and all(torch.count_nonzero(x.grad) == 0 for x in logits)
    assert case_loss(logits, None).item() == 0.0


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        (torch.tensor([[0, 1]]), "shape"),
        (torch.tensor([[0, 4], [0, 0], [0, 0]]), "outside"),
        (torch.zeros(3, 2), "dtype"),
    ],
)
def test_bad_case_targets_raise_data_error(targets, words):
    logits = (torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(DataError, match=words):
        case_loss(logits, targets)


def test_box_cost_flips_the_assignment(make_output):
    labels = two_lesions()
    out, targets = ambiguous_output(make_output, labels)
    plain = HungarianMatcher(2.0, 10.0, 10.0)(out.class_logits, out.mask_logits[-1], [targets], boxes=out.boxes)
    with_box = HungarianMatcher(2.0, 10.0, 10.0, box_l1_weight=5.0, box_giou_weight=2.0, instance_classes=(1,))
    boxed = with_box(out.class_logits, out.mask_logits[-1], [targets], boxes=out.boxes)
    # Segments: 0 background, 1 lesion A, 2 lesion B.
    assert dict(zip(*(x.tolist() for x in plain[0]), strict=True)) == {0: 0, 1: 1, 2: 2}
    assert dict(zip(*(x.tolist() for x in boxed[0]), strict=True)) == {0: 0, 1: 2, 2: 1}
    # Without boxes the box weights do nothing.
    no_boxes = with_box(out.class_logits, out.mask_logits[-1], [targets])
    assert [x.tolist() for x in no_boxes[0]] == [x.tolist() for x in plain[0]]
    # The criterion matches the same way, and its box terms are then 0.
    criterion = SetCriterion(2, instance_classes=(1,), box_l1_weight=5.0, box_giou_weight=2.0)
    result = criterion(out, labels)
    assert dict(zip(*(x.tolist() for x in result.indices[0]), strict=True)) == {0: 0, 1: 2, 2: 1}
    assert result.terms["box_l1"] == pytest.approx(0.0, abs=1e-6)
    assert result.terms["box_giou"] == pytest.approx(0.0, abs=1e-6)


def test_box_loss_supervises_only_box_targets_and_divides_by_their_count(make_output):
    labels = two_lesions()
    labels[0, :, :, 7] = 2  # a semantic organ (class 2) along one face
    K, Q, L = 3, 4, 8.0
    targets = build_targets(labels, instance_classes=(1,), with_boxes=True)[0]  # [bg, A, B, organ]
    assert targets.labels.tolist() == [0, 1, 1, 2]
    masks = torch.stack([torch.where(m, L, -L) for m in targets.masks])[None]
    cls = torch.zeros(1, Q, K + 1)
    for q, k in enumerate(targets.labels.tolist()):
        cls[0, q, k] = L
    boxes = targets.boxes[None].clone()
    out = make_output([cls], [masks], True)
    criterion = SetCriterion(K, instance_classes=(1,), box_l1_weight=5.0, box_giou_weight=2.0)

    def box_terms(b):
        r = criterion(dataclasses.replace(out, boxes=b, stage_boxes=[b]), labels)
        return r.terms["box_l1"], r.terms["box_giou"]

    assert box_terms(boxes) == pytest.approx((0.0, 0.0), abs=1e-6)
    moved = boxes.clone()
    moved[0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.1])  # background query
    moved[0, 3] = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])  # organ query
    assert box_terms(moved) == pytest.approx((0.0, 0.0), abs=1e-6)  # not box targets
    moved[0, 1, 0] += 0.25  # lesion A's box moves 0.25 along z: L1 0.25 over 2 box targets
    assert box_terms(moved)[0] == pytest.approx(5.0 * 0.25 / 2, rel=1e-5)
    # Without instance classes the segments are [bg, both lesions, organ] and every foreground one is a box target.
    semantic = build_targets(labels, with_boxes=True)[0]
    out = make_output([cls[:, [0, 1, 3]]], [torch.stack([torch.where(m, L, -L) for m in semantic.masks])[None]], True)
    moved = semantic.boxes[None].clone()
    moved[0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.1])  # background: no box loss
    moved[0, 2, 2] -= 0.25  # the organ's box moves 0.25 along x
    r = SetCriterion(K, box_l1_weight=1.0, box_giou_weight=1.0)(
        dataclasses.replace(out, boxes=moved, stage_boxes=[moved]), labels
    )
    assert r.terms["box_l1"] == pytest.approx(0.25 / 2, rel=1e-5)
    assert r.terms["box_l1"] == pytest.approx(box_l1(moved[0, 1:], semantic.boxes[1:]).sum().item() / 2, rel=1e-5)


def test_classification_only_criterion_skips_matching(random_output, blob_labels):
    K = 3
    out = with_tasks(random_output(2, 4, K), task_classes=(2,))
    criterion = SetCriterion(K, class_weight=0.0, bce_weight=0.0, dice_weight=0.0, case_weight=2.0)
    targets = torch.tensor([[1], [0]])
    result = criterion(out, blob_labels(2, K), case_targets=targets)
    assert set(result.terms) == {"total", "case"}
    assert all(p.numel() == 0 and t.numel() == 0 for p, t in result.indices)
    assert result.total.item() == pytest.approx(2.0 * F.cross_entropy(out.case_logits[0], targets[:, 0]).item())
    result.total.backward()
    # Every output stays in the graph (zero gradient) so DDP finds no unused parameter.
    assert all(m.grad is not None and torch.count_nonzero(m.grad) == 0 for m in out.mask_logits)
    assert all(b.grad is not None for b in out.stage_boxes)
    with pytest.raises(ValueError, match="classification-only"):
        SetCriterion(K, class_weight=0.0, bce_weight=0.0, dice_weight=0.0, case_weight=1.0, box_l1_weight=1.0)
    with pytest.raises(ValueError, match="all 0"):
        SetCriterion(K, class_weight=0.0, bce_weight=0.0, dice_weight=0.0)


def test_build_criterion_passes_task_weights_only_to_models_with_tasks():
    tasks = (("grade", ("low", "high")),)
    cfg = ModelConfig.preset("tiny", 1, 3, instance_classes=(2,), box_head=True, case_tasks=tasks)
    criterion = build_criterion(cfg, LossConfig(box_l1_weight=3.0, case_weight=0.5))
    assert criterion.weights == {"class": 2.0, "bce": 10.0, "dice": 10.0, "box_l1": 3.0, "box_giou": 2.0, "case": 0.5}
    assert criterion.instance_classes == (2,) and criterion.matcher.box_l1_weight == 3.0
    assert build_criterion(ModelConfig.preset("tiny", 1, 3)).weights == {"class": 2.0, "bce": 10.0, "dice": 10.0}
    only_cls = LossConfig(class_weight=0, bce_weight=0, dice_weight=0)
    assert build_criterion(ModelConfig.preset("tiny", 1, 3, case_tasks=tasks), only_cls).weights == {"case": 1.0}
    with pytest.raises(ConfigError, match="classification-only"):
        build_criterion(ModelConfig.preset("tiny", 1, 3), only_cls)


def test_missing_outputs_raise(random_output, blob_labels):
    out = random_output(1, 4, 3)
    with pytest.raises(ValueError, match="box_head"):
        SetCriterion(3, box_l1_weight=1.0)(out, blob_labels(1, 3))
    with pytest.raises(ValueError, match="case_tasks"):
        SetCriterion(3, case_weight=1.0)(out, blob_labels(1, 3))


def test_old_loss_config_json_loads_with_the_new_defaults():
    old = '{"class_weight": 2.0, "bce_weight": 10.0, "dice_weight": 10.0, "no_object_weight": 0.1, "matching": "final"}'
    cfg = LossConfig.from_json(old)
    assert (cfg.box_l1_weight, cfg.box_giou_weight, cfg.case_weight) == (5.0, 2.0, 1.0)
    assert LossConfig.from_json(cfg.to_json()) == cfg


def golden_case():
    """The fixed input whose loss was recorded before issue 12 (``git show HEAD`` of that day)."""
    from MaskMedCore.models.outputs import MaskMedOutput

    g = torch.Generator().manual_seed(11)
    B, Q, K = 2, 5, 4
    cls = [torch.randn(B, Q, K + 1, generator=g) for _ in SIZES]
    masks = [torch.randn(B, Q, *s, generator=g) for s in SIZES]
    labels = torch.zeros(B, 16, 16, 16, dtype=torch.long)
    labels[:, 2:9, 3:10, 1:8] = 1
    labels[:, 9:15, 8:14, 8:15] = 2
    labels[0, 0:4, 12:16, 0:5] = 3
    out = MaskMedOutput(
        class_logits=cls[-1],
        mask_logits=masks,
        stage_class_logits=cls,
        class_embeddings=torch.zeros(B, Q, 4),
        mask_embeddings=torch.zeros(B, Q, 4),
        decoupled=True,
    )
    return out, labels, K


def test_old_config_is_unchanged():
    out, labels, K = golden_case()
    result = build_criterion(ModelConfig.preset("tiny", 1, K), LossConfig())(out, labels)
    # Recorded with the criterion before issue 12 on the same input.
    assert result.total.item() == pytest.approx(18.64609146118164, rel=1e-6)
    expected_terms = {"class": 3.1101021766662598, "bce": 8.112683296203613, "dice": 7.423306465148926}
    assert {t: result.terms[t] for t in expected_terms} == pytest.approx(expected_terms, rel=1e-6)
    assert set(result.terms) == {"total", "class", "bce", "dice"} | {
        f"stage{s}/{t}" for s in range(3) for t in ("class", "bce", "dice")
    }
    assert [(p.tolist(), t.tolist()) for p, t in result.indices] == [
        ([0, 2, 3, 4], [2, 3, 1, 0]),
        ([0, 1, 2], [1, 2, 0]),
    ]


def test_old_config_is_bit_identical_when_task_outputs_are_present_but_off(random_output, blob_labels):
    K = 4
    labels = blob_labels(2, K)
    criterion = build_criterion(ModelConfig.preset("tiny", 1, K), LossConfig(loss_num_points=50, matcher_num_points=80))
    plain = random_output(2, 6, K)
    extra = with_tasks(random_output(2, 6, K))  # same logits (same seed) plus boxes and case logits
    a = criterion(plain, labels, generator=torch.Generator().manual_seed(3))
    b = criterion(
        extra, labels, generator=torch.Generator().manual_seed(3), case_targets=torch.tensor([[0, 1], [1, 2]])
    )
    assert torch.equal(a.total, b.total) and a.terms == b.terms
    a.total.backward()
    b.total.backward()
    for x, y in zip(
        plain.mask_logits + plain.stage_class_logits, extra.mask_logits + extra.stage_class_logits, strict=True
    ):
        assert torch.equal(x.grad, y.grad)
    assert all(torch.count_nonzero(bx.grad) == 0 for bx in extra.stage_boxes)  # connected, not trained


def test_a_few_steps_reduce_the_box_and_case_losses():
    torch.manual_seed(0)
    tasks = (("lesions", ("none", "several")),)
    # No bridge: the test is about the head and the loss, and it halves the CPU time.
    cfg = ModelConfig.preset("tiny", 1, 3, bridge="none", instance_classes=(2,), box_head=True, case_tasks=tasks)
    model = build_model(cfg)
    criterion = build_criterion(cfg)
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    labels[:, 8:, :, :] = 1  # an organ in both images
    labels[1, 2:6, 2:6, 2:6] = 2  # two lesions in image 1 only
    labels[1, 10:14, 9:13, 9:13] = 2
    g = torch.Generator().manual_seed(0)
    x = labels[:, None].float() + 0.1 * torch.randn(2, 1, 16, 16, 16, generator=g)
    case_targets = torch.tensor([[0], [1]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for step in range(20):
        result = criterion(model(x), labels, generator=torch.Generator().manual_seed(step), case_targets=case_targets)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        history.append(result.terms)
    terms = ("box_l1", "box_giou", "case")
    first = {t: sum(h[t] for h in history[:3]) / 3 for t in terms}
    last = {t: sum(h[t] for h in history[-3:]) / 3 for t in terms}
    assert last["box_l1"] + last["box_giou"] < 0.8 * (first["box_l1"] + first["box_giou"]), (first, last)
    assert last["box_l1"] < first["box_l1"] and last["box_giou"] < first["box_giou"], (first, last)
    assert last["case"] < 0.5 * first["case"], (first, last)  # well below ln 2: the images are told apart
