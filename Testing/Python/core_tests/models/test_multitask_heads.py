"""Box head and case head of the masked multi-scale head (issue 12): shapes, state dict unchanged when off,
``take``/``concat`` keep the new outputs, and gradients reach the new parameters."""

from __future__ import annotations

import pytest
import torch

from MaskMedCore.config import ModelConfig
from MaskMedCore.models.build import build_model
from MaskMedCore.models.heads.case_head import CaseClassificationHead
from MaskMedCore.models.heads.masked_multiscale_head import MaskedMultiScaleHead
from MaskMedCore.models.outputs import MaskMedOutput

TASKS = (("grade", ("low", "high")), ("count", ("0", "1", "2+")))
INPUT = (2, 1, 16, 16, 16)

# The tiny preset's head (1 channel, 4 classes) before issue 12: its modules, tensor count and size.
OLD_HEAD_MODULES = {
    "blocks",
    "class_mlp",
    "classifier",
    "decoder_norm",
    "mask_mlps",
    "memories",
    "query_feat",
    "query_pos",
}
OLD_HEAD_TENSORS, OLD_HEAD_VALUES = 115, 51261


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.preset("tiny", 1, 4, bridge="none", **overrides)


def head_state(model) -> dict[str, torch.Tensor]:
    return model.head.state_dict()


@pytest.mark.parametrize(
    ("overrides", "box", "case_shapes"),
    [
        ({}, False, []),
        ({"box_head": True}, True, []),
        ({"case_tasks": TASKS}, False, [(2, 2), (2, 3)]),
        ({"box_head": True, "case_tasks": TASKS, "instance_classes": (3,)}, True, [(2, 2), (2, 3)]),
    ],
)
def test_output_shapes(overrides, box, case_shapes):
    torch.manual_seed(0)
    cfg = tiny(**overrides)
    out = build_model(cfg)(torch.randn(*INPUT))
    Q = cfg.queries_count
    assert [tuple(c.shape) for c in out.case_logits] == case_shapes
    if not box:
        assert out.boxes is None and out.stage_boxes is None
        return
    assert out.boxes.shape == (2, Q, 6)
    assert len(out.stage_boxes) == len(out.mask_logits)
    for b, m in zip(out.stage_boxes, out.mask_logits, strict=True):
        assert b.shape == (*m.shape[:2], 6) and (b > 0).all() and (b < 1).all()
    assert out.boxes is out.stage_boxes[-1]


def test_without_the_options_the_state_dict_is_todays():
    torch.manual_seed(0)
    state = head_state(build_model(tiny()))
    assert {k.split(".")[0] for k in state} == OLD_HEAD_MODULES
    assert len(state) == OLD_HEAD_TENSORS and sum(v.numel() for v in state.values()) == OLD_HEAD_VALUES


def test_the_options_only_add_their_own_modules_and_leave_the_rest_as_it_was():
    torch.manual_seed(0)
    plain = build_model(tiny())
    torch.manual_seed(0)
    multi = build_model(tiny(box_head=True, case_tasks=TASKS))
    old, new = plain.state_dict(), multi.state_dict()
    added = set(new) - set(old)
    assert set(old) <= set(new)
    assert added and all(k.startswith(("head.box_mlp.", "head.case_head.")) for k in added)
    # The new modules are created last, so every old tensor gets the same initial values...
    assert all(torch.equal(old[k], new[k]) for k in old)
    # ... and the segmentation outputs are the same.
    x = torch.randn(*INPUT)
    a, b = plain(x), multi(x)
    assert torch.equal(a.class_logits, b.class_logits)
    assert all(torch.equal(p, q) for p, q in zip(a.mask_logits, b.mask_logits, strict=True))
    # DETR's box MLP: 3 layers, E -> E -> E -> 6.
    assert [tuple(layer.weight.shape) for layer in multi.head.box_mlp.layers] == [(32, 32), (32, 32), (6, 32)]
    assert multi.head.case_head.task_classes == (2, 3)


def test_take_and_concat_keep_boxes_and_case_logits():
    torch.manual_seed(0)
    out = build_model(tiny(box_head=True, case_tasks=TASKS))(torch.randn(3, 1, 16, 16, 16))
    second = out.take(slice(1, 2))
    assert second.boxes.shape[0] == 1 and torch.equal(second.boxes, out.boxes[1:2])
    assert all(torch.equal(s, b[1:2]) for s, b in zip(second.stage_boxes, out.stage_boxes, strict=True))
    assert all(torch.equal(s, c[1:2]) for s, c in zip(second.case_logits, out.case_logits, strict=True))
    picked = out.take(torch.tensor([2, 0]))
    assert torch.equal(picked.case_logits[1], out.case_logits[1][[2, 0]])
    joined = MaskMedOutput.concat([out.take(slice(0, 1)), out.take(slice(1, 3))])
    assert torch.equal(joined.boxes, out.boxes)
    assert all(torch.equal(j, b) for j, b in zip(joined.stage_boxes, out.stage_boxes, strict=True))
    assert all(torch.equal(j, c) for j, c in zip(joined.case_logits, out.case_logits, strict=True))
    plain = build_model(tiny())(torch.randn(*INPUT))
    again = MaskMedOutput.concat([plain.take(slice(0, 1)), plain.take(slice(1, 2))])
    assert again.boxes is None and again.stage_boxes is None and again.case_logits == ()


def test_backward_reaches_the_new_parameters_and_the_shared_queries():
    torch.manual_seed(0)
    model = build_model(tiny(box_head=True, case_tasks=TASKS))
    out = model(torch.randn(*INPUT))
    out.boxes.sum().backward(retain_graph=True)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.box_mlp.parameters())
    model.zero_grad(set_to_none=True)
    sum(c.logsumexp(1).sum() for c in out.case_logits).backward()
    case_head = model.head.case_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in case_head.parameters())
    # The case loss trains the same queries the segmentation uses.
    assert model.head.query_feat[0].weight.grad.abs().sum() > 0


def test_inference_outputs_only_the_finest_stage():
    torch.manual_seed(0)
    model = build_model(tiny(box_head=True, case_tasks=TASKS, deep_supervision=False))
    out = model(torch.randn(*INPUT))
    assert len(out.mask_logits) == len(out.stage_boxes) == 1 and out.boxes is out.stage_boxes[0]
    assert [tuple(c.shape) for c in out.case_logits] == [(2, 2), (2, 3)]


def test_case_head_reads_every_query():
    torch.manual_seed(0)
    head = CaseClassificationHead(dim=16, heads=4, ffn_dim=32, task_classes=[2, 5])
    queries = torch.randn(2, 7, 16)
    logits = head(queries)
    assert [tuple(t.shape) for t in logits] == [(2, 2), (2, 5)]
    changed = queries.clone()
    changed[1, 6] += 1.0  # one query of item 1
    after = head(changed)
    assert torch.allclose(after[0][0], logits[0][0]) and not torch.allclose(after[0][1], logits[0][1])


@pytest.mark.parametrize("task_classes", [[], [2, 1]])
def test_case_head_rejects_bad_tasks(task_classes):
    with pytest.raises(ValueError, match="task_classes"):
        CaseClassificationHead(16, 4, 32, task_classes)


def test_box_and_case_heads_need_the_decoupled_variant():
    with pytest.raises(ValueError, match="decoupled"):
        MaskedMultiScaleHead([16, 8], 4, 3, variant="attn_cls", masked_attention=False, dim=16, heads=4, box_head=True)
    with pytest.raises(ValueError, match="decoupled"):
        MaskedMultiScaleHead(
            [16, 8], 4, 3, variant="mlp_cls", masked_attention=False, dim=16, heads=4, case_task_classes=[2]
        )
