"""Segmentation heads: the point-wise head is exactly nnU-Net's 1x1x1 conv; masked attention is NaN-free."""

import torch
import torch.nn.functional as F

from MaskMedCore.layers.transformer_layers import unblock_empty_rows
from MaskMedCore.models.heads.masked_multiscale_head import MaskedMultiScaleHead
from MaskMedCore.models.heads.pointwise import PointwiseHead
from MaskMedCore.models.heads.stage_memory import pooled_grid
from MaskMedCore.models.outputs import semantic_probs


def _features(gen, channels=(16, 8), sizes=((4, 4, 4), (8, 8, 8)), batch=2):
    return [torch.randn(batch, c, *s, generator=gen) for c, s in zip(channels, sizes)]


def test_pointwise_head_is_exactly_a_1x1x1_conv():
    gen = torch.Generator().manual_seed(0)
    feats = _features(gen)
    head = PointwiseHead([16, 8], num_classes=3)
    out = head(feats)
    conv = head.seg_layers[-1]
    expected = F.conv3d(feats[-1], conv.weight, conv.bias)
    assert torch.equal(out.mask_logits[-1], expected)
    # Semantic probabilities are nnU-Net's softmax over the conv channels.
    torch.testing.assert_close(semantic_probs(out), expected.softmax(1), rtol=1e-6, atol=1e-6)
    assert not out.decoupled and out.class_logits.shape == (2, 3, 4)
    assert torch.equal(out.class_logits[0, :, :3], torch.eye(3))


def test_unblock_empty_rows():
    blocked = torch.tensor([[[True, True], [True, False]]])
    assert unblock_empty_rows(blocked).tolist() == [[[False, False], [True, False]]]


def test_masked_attention_with_empty_masks_is_finite():
    gen = torch.Generator().manual_seed(1)
    feats = _features(gen)
    head = MaskedMultiScaleHead([16, 8], num_queries=3, num_classes=3, dim=32, heads=4, ffn_dim=64)
    # Push every coarse-stage mask to "empty": all keys blocked for all queries -> must unblock.
    with torch.no_grad():
        head.mask_mlps[0].layers[-1].weight.zero_()
        head.mask_mlps[0].layers[-1].bias.fill_(-50.0)
    feats[0] = feats[0].abs()
    out = head(feats)
    assert (out.mask_logits[0] < 0).all()
    for t in (*out.mask_logits, out.class_logits):
        assert torch.isfinite(t).all()
    out.mask_logits[-1].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_masked_attention_changes_the_finest_prediction():
    gen = torch.Generator().manual_seed(2)
    feats = _features(gen)
    torch.manual_seed(0)
    masked = MaskedMultiScaleHead([16, 8], 3, 3, masked_attention=True, dim=32, heads=4, ffn_dim=64)
    unmasked = MaskedMultiScaleHead([16, 8], 3, 3, masked_attention=False, dim=32, heads=4, ffn_dim=64)
    unmasked.load_state_dict(masked.state_dict())
    a, b = masked(feats), unmasked(feats)
    torch.testing.assert_close(a.mask_logits[0], b.mask_logits[0])  # first stage has no previous mask
    assert not torch.allclose(a.mask_logits[1], b.mask_logits[1])


def test_pooled_grid_bounds_tokens():
    assert pooled_grid((8, 8, 8), 512) == (8, 8, 8)
    grid = pooled_grid((128, 128, 128), 4096)
    assert grid == (16, 16, 16)
    grid = pooled_grid((64, 192, 160), 4096)
    assert grid[0] * grid[1] * grid[2] <= 4096


def test_per_stage_queries_are_independent_sets():
    head = MaskedMultiScaleHead(
        [16, 8], 3, 3, shared_queries=False, masked_attention=False, dim=32, heads=4, ffn_dim=64
    )
    assert len(head.query_feat) == 2
    shared = MaskedMultiScaleHead([16, 8], 3, 3, dim=32, heads=4, ffn_dim=64)
    assert len(shared.query_feat) == 1
