"""The whole network: every ablation variant builds, runs, stays finite and trains every parameter."""

import pytest
import torch

from MaskMedCore import build_model, semantic_probs
from MaskMedCore.config import HEADS, ModelConfig
from MaskMedCore.errors import DataError
from MaskMedCore.losses import build_criterion

ANISO = dict(strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), kernel_sizes=((1, 3, 3),) + ((3, 3, 3),) * 3)

VARIANTS = [
    *[dict(head=h, bridge="none") for h in HEADS],
    *[dict(head=h, queries="per_stage", bridge="none") for h in HEADS if h != "pointwise"],
    dict(head="decoupled", masked_attention=False, bridge="none"),
    *[dict(bridge=b) for b in ("standard", "deformable", "fsad")],
    dict(head="pointwise", bridge="fsad"),
    # nnU-Net ResEnc's residual encoder under the full model and as the plain point-wise network.
    dict(encoder="residual", n_blocks_per_stage=(1, 2, 2, 2)),
    dict(head="pointwise", bridge="none", encoder="residual", n_blocks_per_stage=(1, 2, 2, 2)),
]


def _ids(v):
    return "-".join(f"{k}={val}" for k, val in v.items())


def _inputs(cfg, batch, spatial, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, *spatial, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (batch, *spatial), generator=gen)
    return x, labels


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_variant_shapes_finite_and_every_parameter_learns(variant):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", in_channels=2, num_classes=4, **variant)
    model = build_model(cfg)
    x, labels = _inputs(cfg, 2, (16, 16, 24))
    out = model(x)
    Q, K = cfg.queries_count, cfg.num_classes
    assert out.class_logits.shape == (2, Q, K + 1)
    assert [tuple(m.shape) for m in out.mask_logits] == [(2, Q, 4, 4, 6), (2, Q, 8, 8, 12), (2, Q, 16, 16, 24)]
    assert len(out.stage_class_logits) == 3
    assert out.class_embeddings.shape[:2] == (2, Q) and out.mask_embeddings.shape == (2, Q, 8)
    assert out.decoupled == (cfg.head == "decoupled")
    probs = semantic_probs(out)
    assert probs.shape == (2, K, 16, 16, 24)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16, 24))
    for t in (*out.mask_logits, *out.stage_class_logits, probs):
        assert torch.isfinite(t).all()
    loss = build_criterion(cfg)(out, labels).total
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("topology", ["isotropic", "anisotropic"])
@pytest.mark.parametrize("bridge", ["fsad", "standard"])
def test_channels_and_anisotropic_strides(channels, topology, bridge):
    torch.manual_seed(0)
    extra = ANISO if topology == "anisotropic" else {}
    cfg = ModelConfig.preset("tiny", in_channels=channels, num_classes=3, bridge=bridge, **extra)
    model = build_model(cfg).eval()
    spatial = (8, 32, 24) if topology == "anisotropic" else (16, 16, 16)
    x, _ = _inputs(cfg, 1, spatial)
    with torch.no_grad():
        out = model(x)
    assert out.mask_logits[-1].shape == (1, 3, *spatial)
    assert torch.isfinite(semantic_probs(out)).all()


def test_deep_supervision_changes_outputs_not_state_dict():
    cfg = ModelConfig.preset("tiny", 1, 3)
    with_ds = build_model(cfg)
    without = build_model(cfg.replace(deep_supervision=False))
    assert with_ds.state_dict().keys() == without.state_dict().keys()
    without.load_state_dict(with_ds.state_dict())
    x, _ = _inputs(cfg, 1, (16, 16, 16))
    with torch.no_grad():
        a, b = with_ds.eval()(x), without.eval()(x)
    assert len(a.mask_logits) == 3 and len(b.mask_logits) == 1
    torch.testing.assert_close(a.mask_logits[-1], b.mask_logits[0])
    torch.testing.assert_close(semantic_probs(a), semantic_probs(b))


def test_param_groups_split_cnn_and_transformer():
    model = build_model(ModelConfig.preset("tiny", 1, 3))
    groups = model.param_groups(lr=1e-3, transformer_lr_ratio=0.1)
    assert [g["name"] for g in groups] == ["cnn", "transformer"]
    assert groups[1]["lr"] == pytest.approx(1e-4) and groups[1]["lr_scale"] == 0.1
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    cnn = {id(p) for p in groups[0]["params"]}
    assert all(id(p) in cnn for p in model.encoder.parameters())
    assert not any(id(p) in cnn for p in model.bridge.parameters())
    assert not any(id(p) in cnn for p in model.head.parameters())
    pointwise = build_model(ModelConfig.preset("tiny", 1, 3, head="pointwise", bridge="none"))
    assert [g["name"] for g in pointwise.param_groups(1e-3)] == ["cnn"]


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 1, 16, 16), "5 dims"), ((1, 2, 16, 16, 16), "1 channel"), ((1, 1, 16, 12, 16), "H=12")],
)
def test_bad_input_is_a_clear_error(shape, match):
    model = build_model(ModelConfig.preset("tiny", 1, 3))
    with pytest.raises(DataError, match=match.replace("1 channel", "expects 1")):
        model(torch.zeros(shape))
