"""Skip bridges: shapes for every kind, untouched fine stages, value levels, errors, memory scaling."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.nn.attention import SDPBackend, sdpa_kernel

from MaskMedCore.errors import ConfigError
from MaskMedCore.models.bridges import BRIDGE_KINDS, DeformableBridge, DenseBridge, build_bridge

ISOTROPIC = ((4, 8, 16, 16), [(16, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)])
ANISOTROPIC = ((4, 8, 16, 16), [(4, 16, 16), (4, 8, 8), (2, 4, 4), (1, 2, 2)])  # strides (1,2,2), (2,2,2)...
SMALL = dict(dim=24, heads=3, points=2, layers=2, ffn_dim=48)


def _skips(channels, shapes, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=g) for c, s in zip(channels, shapes, strict=True)]


@pytest.mark.parametrize("stages", [ISOTROPIC, ANISOTROPIC], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind", ["standard", "deformable", "fsad"])
@pytest.mark.parametrize("query_stages", [1, 3])
def test_output_shapes_and_untouched_fine_stages(kind, batch, stages, query_stages):
    torch.manual_seed(0)
    channels, shapes = stages
    bridge = build_bridge(kind, channels, query_stages, **SMALL)
    skips = _skips(channels, shapes, batch)
    out = bridge(skips)
    assert out is not skips and len(out) == len(skips)
    assert [o.shape for o in out] == [s.shape for s in skips]
    first = len(skips) - query_stages
    for s in range(first):
        assert out[s] is skips[s]
    for s in range(first, len(skips)):
        assert out[s] is not skips[s] and not torch.equal(out[s], skips[s])
        assert torch.isfinite(out[s]).all()


@pytest.mark.parametrize("kind", ["standard", "deformable", "fsad"])
def test_all_stages_as_queries_and_backward(kind):
    torch.manual_seed(0)
    channels, shapes = (3, 6), [(6, 8, 4), (3, 4, 2)]
    bridge = build_bridge(kind, channels, 2, dim=12, heads=2, points=1, layers=1, ffn_dim=16, dropout=0.1)
    skips = _skips(channels, shapes, 2)
    out = bridge(skips)
    assert [o.shape for o in out] == [s.shape for s in skips]
    sum(o.sum() for o in out).backward()
    no_grad = [n for n, p in bridge.named_parameters() if p.grad is None]
    assert not no_grad


def test_fsad_reads_full_resolution_and_deformable_does_not():
    """FSAD's values include the finest stage; the Deformable-DETR bridge only sees the query stages."""
    torch.manual_seed(0)
    channels, shapes = ISOTROPIC
    fsad = build_bridge("fsad", channels, 2, **SMALL)
    deformable = build_bridge("deformable", channels, 2, **SMALL)
    assert isinstance(fsad, DeformableBridge) and isinstance(deformable, DeformableBridge)
    assert fsad.layers[0].attn.levels == 4 and deformable.layers[0].attn.levels == 2
    assert [p.in_channels for p in fsad.layers[0].attn.value_proj] == [4, 8, 24, 24]
    assert [p.in_channels for p in deformable.layers[0].attn.value_proj] == [24, 24]
    for bridge, reads_finest in [(fsad, True), (deformable, False)]:
        skips = _skips(channels, shapes, 1)
        skips[0].requires_grad_(True)
        out = bridge(skips)
        out[-1].sum().backward()
        grad = skips[0].grad
        assert (grad is not None and grad.abs().sum() > 0) == reads_finest


def test_none_and_kinds():
    assert build_bridge("none", (4, 8), 1, **SMALL) is None
    assert set(BRIDGE_KINDS) == {"none", "standard", "deformable", "fsad"}
    assert isinstance(build_bridge("standard", (4, 8), 1, **SMALL), DenseBridge)


def test_bad_kind_raises_config_error_with_choices():
    with pytest.raises(ConfigError, match="'none', 'standard', 'deformable', 'fsad'"):
        build_bridge("fsad-transformer", (4, 8), 1, **SMALL)


@pytest.mark.parametrize("query_stages", [0, 3])
def test_bad_query_stages_raises_config_error(query_stages):
    with pytest.raises(ConfigError, match="query_stages"):
        build_bridge("fsad", (4, 8), query_stages, **SMALL)


def test_bad_dim_raises_value_error():
    with pytest.raises(ValueError, match="even"):
        build_bridge("fsad", (4, 8), 1, dim=9, heads=3, points=1, layers=1, ffn_dim=8)


def test_mismatched_skips_raise_value_error():
    bridge = build_bridge("fsad", (4, 8), 1, **SMALL)
    with pytest.raises(ValueError, match="2 stages"):
        bridge(_skips((4,), [(4, 4, 4)], 1))
    with pytest.raises(ValueError, match=r"skips\[1\]"):
        bridge(_skips((4, 5), [(4, 4, 4), (2, 2, 2)], 1))


# ---------------------------------------------------------------- memory scaling
#
# CPU has no max_memory_allocated, so we measure what dominates training memory: the bytes of
# tensors autograd keeps for backward, de-duplicated by storage (views of one buffer count once).
# Saved activations are what a forward holds until backward; transient buffers freed inside the
# forward are not counted.


def _saved_bytes(bridge, skips) -> int:
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = bridge(skips)
    assert out[-1].requires_grad
    return sum(storages.values())


def _increment_ratio(sizes, saved):
    """(m3 - m2) / (m2 - m1) of the saved bytes against that of the sizes, and the size ratio itself."""
    (s1, s2, s3), (m1, m2, m3) = sizes, saved
    return (m3 - m2) / (m2 - m1), (s3 - s2) / (s2 - s1)


def test_fsad_memory_is_linear_in_full_resolution_voxels():
    """Full-resolution level 16^3 -> 32^3 -> 64^3 with 576 fixed queries: increments grow like voxels (x8)."""
    torch.manual_seed(0)
    channels = (2, 4, 8)
    bridge = build_bridge("fsad", channels, 2, dim=16, heads=2, points=2, layers=1, ffn_dim=32)
    sides = (16, 32, 64)
    saved = [_saved_bytes(bridge, _skips(channels, [(n, n, n), (8, 8, 8), (4, 4, 4)], 1)) for n in sides]
    ratio, voxel_ratio = _increment_ratio([n**3 for n in sides], saved)
    assert voxel_ratio == 8
    # Linear: increments scale like the voxel increments (8); quadratic would give 8 * 9.1 = 73.
    assert 7.5 < ratio < 8.5, (saved, ratio)
    per_voxel = (saved[2] - saved[1]) / (64**3 - 32**3)
    assert per_voxel < 4 * (2 + 16) * 1.01, per_voxel  # the raw skip (2 ch) + its value projection (16 ch)


def test_dense_bridge_memory_is_quadratic_in_tokens_when_attention_is_materialised():
    """The "standard" bridge with the plain (math) SDPA: tokens 256 -> 512 -> 1024, increments x4 not x2.

    With a fused kernel (CPU flash attention, picked by default here, or flash/efficient on CUDA)
    only O(tokens) is saved, but compute stays quadratic; the math path is the paper's premise.
    """
    torch.manual_seed(0)
    channels = (4,)
    bridge = build_bridge("standard", channels, 1, dim=16, heads=2, points=1, layers=1, ffn_dim=32)
    shapes = [(4, 8, 8), (8, 8, 8), (8, 16, 8)]
    with sdpa_kernel(SDPBackend.MATH):
        saved = [_saved_bytes(bridge, _skips(channels, [s], 1)) for s in shapes]
    ratio, token_ratio = _increment_ratio([d * h * w for d, h, w in shapes], saved)
    assert token_ratio == 2
    assert ratio > 3.5, (saved, ratio)  # linear would give 2, pure quadratic 4
