"""2D networks (issue 13): the same code path as 3D with 2D operators, volumes segmented slice by slice,
3D networks unchanged, and a 2D network that learns a real slice."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore import build_criterion, build_model, semantic_probs
from MaskMedCore.config import ModelConfig
from MaskMedCore.errors import DataError
from MaskMedCore.inference.cpu_batching import network_forward
from MaskMedCore.inference.query_summary import QueryAccumulator, to_device_mass
from MaskMedCore.inference.sliding_window import gaussian_importance_map, sliding_window_predict
from MaskMedCore.layers.position_encoding import sine_position_encoding, sine_position_encoding_3d
from MaskMedCore.models.heads.masked_multiscale_head import MaskedMultiScaleHead

# Anisotropic 2D topology: stage 2 halves H only.
ANISO_2D = dict(strides=((1, 1), (2, 2), (2, 1), (2, 2)), kernel_sizes=((3, 3),) * 4)
IMAGE = (16, 24)  # (H, W), divisible by the total stride (8, 4)
STAGE_SHAPES = [(4, 12), (8, 12), (16, 24)]  # decoder outputs, coarsest first
HEADS_2D = ("pointwise", "mlp_cls", "attn_cls", "attn_cls_mask", "decoupled")
BRIDGES = ("none", "standard", "deformable", "fsad")


def _cfg_2d(**overrides) -> ModelConfig:
    # Two query stages, so the bridges have two token levels (and FSAD four value levels).
    base = dict(ANISO_2D, bridge_query_stages=2)
    base.update(overrides)
    return ModelConfig.preset("tiny", in_channels=2, num_classes=3, **base)


def _model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(cfg)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- every head and bridge in 2D


@pytest.mark.parametrize("bridge", BRIDGES)
@pytest.mark.parametrize("head", HEADS_2D)
def test_every_head_and_bridge_runs_in_2d_and_every_parameter_learns(head, bridge):
    cfg = _cfg_2d(head=head, bridge=bridge)
    assert cfg.spatial_dims == 2
    model = _model(cfg)
    assert model.spatial_dims == 2
    assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) for m in model.modules())
    x = _randn(2, 2, *IMAGE)
    labels = torch.randint(0, 3, (2, *IMAGE), generator=torch.Generator().manual_seed(1))
    out = model(x)
    Q, K = cfg.queries_count, cfg.num_classes
    assert [tuple(m.shape) for m in out.mask_logits] == [(2, Q, *s) for s in STAGE_SHAPES]
    assert out.class_logits.shape == (2, Q, K + 1) and len(out.stage_class_logits) == 3
    assert out.class_embeddings.shape[:2] == (2, Q) and out.mask_embeddings.shape == (2, Q, 8)
    assert out.query_slices == 1 and out.boxes is None and out.case_logits == ()
    probs = semantic_probs(out)
    assert probs.shape == (2, K, *IMAGE)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *IMAGE))
    assert all(torch.isfinite(t).all() for t in (*out.mask_logits, *out.stage_class_logits, probs))
    loss = build_criterion(cfg)(out, labels, generator=torch.Generator().manual_seed(2)).total
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize(
    "overrides",
    [
        dict(head="attn_cls", queries="per_stage", bridge="none"),
        dict(encoder="residual", n_blocks_per_stage=(1, 2, 2, 1), bridge="fsad"),
        dict(head="pointwise", encoder="residual", n_blocks_per_stage=(1, 1, 1, 1), bridge="none"),
    ],
    ids=["per_stage_queries", "residual_fsad", "residual_pointwise"],
)
def test_per_stage_queries_and_residual_encoder_in_2d(overrides):
    cfg = _cfg_2d(**overrides)
    model = _model(cfg).eval()
    with torch.no_grad():
        out = model(_randn(1, 2, *IMAGE))
    assert [tuple(m.shape[2:]) for m in out.mask_logits] == STAGE_SHAPES
    assert torch.isfinite(semantic_probs(out)).all()


def test_qtseg_head_is_wired_in_2d_and_3d():
    for cfg, spatial in (
        (_cfg_2d(head="qtseg", bridge="fsad"), IMAGE),
        (ModelConfig.preset("tiny", in_channels=2, num_classes=3, head="qtseg", bridge="none"), (8, 16, 16)),
    ):
        model = _model(cfg).eval()
        assert model.head.uses_encoder_skips
        with torch.no_grad():
            out = model(_randn(1, 2, *spatial))
        assert out.mask_logits[-1].shape == (1, 3, *spatial)
        assert semantic_probs(out).shape == (1, 3, *spatial)


def test_2d_convs_get_he_init():
    """init_he_ covers Conv2d / ConvTranspose2d: zero biases (PyTorch's default init draws them)."""
    model = _model(_cfg_2d(head="pointwise", bridge="none"))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in convs)
    assert all(m.bias is None or m.bias.abs().sum() == 0 for m in convs)


def test_2d_and_3d_networks_have_the_same_state_dict_keys():
    """One code path: only the operators' spatial rank (and the offsets' x, y[, z] width) differ."""
    for head, bridge in (("decoupled", "fsad"), ("attn_cls", "standard"), ("pointwise", "deformable")):
        kw = dict(head=head, bridge=bridge, bridge_query_stages=2)
        two = _model(_cfg_2d(**kw)).state_dict()
        # The 3D twin: each (H, W) stride / kernel gets a D entry in front.
        topology = {name: tuple((t[0], *t) for t in ANISO_2D[name]) for name in ("strides", "kernel_sizes")}
        three = _model(ModelConfig.preset("tiny", in_channels=2, num_classes=3, **topology, **kw)).state_dict()
        assert two.keys() == three.keys()
        for key in two:
            a, b = tuple(two[key].shape), tuple(three[key].shape)
            if key.endswith("sampling_offsets.weight") or key.endswith("sampling_offsets.bias"):
                assert a[0] * 3 == b[0] * 2, key
            elif len(b) == 5:  # conv weights: (out, in, kD, kH, kW) -> (out, in, kH, kW)
                assert a == b[:2] + b[3:], key
            else:
                assert a == b, key


# ---------------------------------------------------------------- 3D unchanged


def _state_dict_fingerprint(model: torch.nn.Module) -> tuple[int, int, str]:
    state = model.state_dict()
    text = "\n".join(f"{k}:{list(v.shape)}" for k, v in sorted(state.items()))
    return sum(p.numel() for p in model.parameters()), len(state), hashlib.sha256(text.encode()).hexdigest()[:16]


# Recorded from the 3D-only code at commit 55847b7 (before the network became dimension-generic), with
# build_model(ModelConfig.preset("tiny", 1, 3, **overrides)): (parameters, state-dict entries, sha256 of the
# sorted "key:shape" lines). Existing 3D checkpoints load only if these stay the same.
THREE_D_FINGERPRINTS = [
    ({}, (419020, 202, "ef9df3cee8870d5f")),
    (dict(head="pointwise", bridge="none"), (351329, 68, "16b440d69dd90a35")),
    (dict(encoder="residual", n_blocks_per_stage=(1, 2, 2, 2)), (714660, 239, "a63bbe68dbf8f0a5")),
    (dict(instance_classes=(1,), box_head=True, case_tasks=(("t", ("a", "b")),)), (430676, 229, "b60e391fe45c03a5")),
    (dict(head="attn_cls", bridge="standard"), (406052, 186, "1a548a6c9c8208cd")),
]


@pytest.mark.parametrize("overrides, expected", THREE_D_FINGERPRINTS, ids=lambda v: str(v)[:40])
def test_3d_state_dicts_are_unchanged(overrides, expected):
    model = build_model(ModelConfig.preset("tiny", 1, 3, **overrides))
    assert model.spatial_dims == 3
    assert _state_dict_fingerprint(model) == expected


# ---------------------------------------------------------------- volumes through a 2D network


@pytest.mark.parametrize(
    "head, bridge", [("decoupled", "fsad"), ("attn_cls_mask", "deformable"), ("pointwise", "standard")]
)
def test_volume_input_equals_each_slice_alone(head, bridge):
    cfg = _cfg_2d(head=head, bridge=bridge)
    model = _model(cfg).eval()
    B, D, Q = 2, 3, cfg.queries_count
    x = _randn(B, 2, D, *IMAGE)
    with torch.no_grad():
        volume = model(x)
        slices = [model(x[:, :, d]) for d in range(D)]
    assert volume.query_slices == D
    assert [tuple(m.shape) for m in volume.mask_logits] == [(B, Q, D, *s) for s in STAGE_SHAPES]
    assert volume.class_logits.shape == (B, D * Q, cfg.num_classes + 1)
    probs, coarse = semantic_probs(volume), semantic_probs(volume, stage=0)
    assert probs.shape == (B, cfg.num_classes, D, *IMAGE)
    tol = dict(rtol=1e-4, atol=1e-5)
    for d, alone in enumerate(slices):
        for stage in range(3):
            torch.testing.assert_close(volume.mask_logits[stage][:, :, d], alone.mask_logits[stage], **tol)
            torch.testing.assert_close(
                volume.stage_class_logits[stage][:, d * Q : (d + 1) * Q], alone.stage_class_logits[stage], **tol
            )
        torch.testing.assert_close(volume.class_logits[:, d * Q : (d + 1) * Q], alone.class_logits, **tol)
        torch.testing.assert_close(volume.class_embeddings[:, d * Q : (d + 1) * Q], alone.class_embeddings, **tol)
        torch.testing.assert_close(volume.mask_embeddings[:, d * Q : (d + 1) * Q], alone.mask_embeddings, **tol)
        torch.testing.assert_close(probs[:, :, d], semantic_probs(alone), **tol)
        torch.testing.assert_close(coarse[:, :, d], semantic_probs(alone, stage=0), **tol)


def test_depth_one_volume_is_the_image_output_with_a_depth_axis():
    cfg = _cfg_2d(head="decoupled", bridge="fsad")
    model = _model(cfg).eval()
    x = _randn(3, 2, *IMAGE)
    with torch.no_grad():
        image, volume = model(x), model(x[:, :, None])
    assert volume.query_slices == 1
    for a, b in zip(image.mask_logits, volume.mask_logits, strict=True):
        assert b.shape == (a.shape[0], a.shape[1], 1, *a.shape[2:])
        torch.testing.assert_close(b[:, :, 0], a)
    for name in ("class_logits", "class_embeddings", "mask_embeddings"):
        torch.testing.assert_close(getattr(volume, name), getattr(image, name))
    torch.testing.assert_close(semantic_probs(volume)[:, :, 0], semantic_probs(image))


def test_sliding_window_inference_runs_a_2d_model_on_one_slice_tiles():
    """What the predictor does with a 2D model: (1, h, w) tiles, batched, padded to the CPU's minimum batch,
    constant tiles reused, per-query statistics accumulated; the result is the model run on each slice."""
    cfg = _cfg_2d(head="decoupled", bridge="fsad")
    model = _model(cfg).eval()
    volume = _randn(2, 5, *IMAGE)
    volume[:, 1] = 0.0  # two identical constant slices: the second is answered from the first
    volume[:, 3] = 0.0
    forward = network_forward(model, min_batch=2, reuse_constant_tiles=True)
    weights = gaussian_importance_map((1, *IMAGE))
    accumulator = QueryAccumulator()

    def predict_fn(tiles: torch.Tensor) -> torch.Tensor:
        out = forward(tiles)
        mass = to_device_mass(out.mask_logits[-1], weights)
        accumulator.add(out.class_logits, out.class_embeddings, out.mask_embeddings, mass, out.decoupled)
        return semantic_probs(out)

    merged = sliding_window_predict(volume, predict_fn, (1, *IMAGE), overlap=0.5, tile_batch_size=2)
    with torch.no_grad():
        direct = semantic_probs(model(volume.transpose(0, 1)))  # the slices as a (D, C, H, W) batch
    torch.testing.assert_close(merged, direct.transpose(0, 1), rtol=1e-4, atol=1e-5)
    assert forward.reused >= 1
    class_prob, class_emb, mask_emb = accumulator.result()
    assert class_prob.shape == (cfg.queries_count, cfg.num_classes + 1)
    assert np.isfinite(class_prob).all() and np.isfinite(class_emb).all() and np.isfinite(mask_emb).all()


# ---------------------------------------------------------------- input checks and output conversions


def test_input_checks_name_the_expected_shape():
    two = _model(_cfg_2d(head="pointwise", bridge="none"))
    three = _model(ModelConfig.preset("tiny", in_channels=2, num_classes=3, head="pointwise", bridge="none"))
    assert (two.spatial_dims, three.spatial_dims) == (2, 3)
    with pytest.raises(DataError, match=r"2D network expects \(B, C, H, W\)"):
        two(torch.zeros(2, *IMAGE))
    with pytest.raises(DataError, match=r"3D network expects 5 dims \(B, C, D, H, W\)"):
        three(torch.zeros(1, 2, *IMAGE))
    with pytest.raises(DataError, match="H=18"):
        two(torch.zeros(1, 2, 18, 24))
    with pytest.raises(DataError, match="H=18"):
        two(torch.zeros(1, 2, 3, 18, 24))  # a volume's D is free, its H and W are strided
    with pytest.raises(DataError, match="channel"):
        two(torch.zeros(1, 3, *IMAGE))


def test_slices_to_volume_rejects_what_is_not_a_slice_batch():
    model = _model(_cfg_2d(head="pointwise", bridge="none")).eval()
    with torch.no_grad():
        image = model(torch.zeros(4, 2, *IMAGE))
    volume = image.slices_to_volume(2, 2)
    assert volume.mask_logits[-1].shape == (2, 3, 2, *IMAGE) and volume.class_logits.shape == (2, 6, 4)
    with pytest.raises(ValueError, match="batch x depth"):
        image.slices_to_volume(3, 2)
    with pytest.raises(ValueError, match="2D network"):
        volume.slices_to_volume(2, 1)


def test_2d_head_refuses_3d_only_outputs():
    with pytest.raises(ValueError, match="3D only"):
        MaskedMultiScaleHead([16, 8], 3, 3, dim=16, heads=4, ffn_dim=32, box_head=True, spatial_dims=2)


def test_2d_sine_encoding_is_rows_then_columns():
    """[y | x] halves; each half is the 1-D encoding of the pixel centre's row / column (DETR, centre-normalised)."""
    H, W, C = 3, 5, 8
    pe = sine_position_encoding((H, W), C).view(H, W, C)
    half = C // 2
    for h in range(H):
        for w in range(W):
            for part, coord in ((pe[h, w, :half], (h + 0.5) / H), (pe[h, w, half:], (w + 0.5) / W)):
                angle = [coord * 2 * math.pi / 10000 ** (2 * (j // 2) / half) for j in range(half)]
                expected = [math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(angle)]
                torch.testing.assert_close(part, torch.tensor(expected), rtol=0, atol=1e-6)
    torch.testing.assert_close(sine_position_encoding_3d((2, 3, 4), 12), sine_position_encoding((2, 3, 4), 12))
    with pytest.raises(ValueError, match="2D sine encoding"):
        sine_position_encoding((H, W), 7)  # odd: no sin/cos pairs


# ---------------------------------------------------------------- a 2D network learns a real slice

OVERFIT_CASE = "hippocampus_007"  # its middle slice holds both classes (80 and 104 pixels)
OVERFIT_STEPS = 100
TARGET_DICE = 0.8


def _middle_slice(folder):
    read = lambda sub: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / sub / f"{OVERFIT_CASE}.nii.gz")))  # noqa: E731
    labels, image = read("labelsTr").astype(np.int64), read("imagesTr").astype(np.float32)
    y, x = labels[labels.shape[0] // 2], image[image.shape[0] // 2]  # axis 0 of the array
    x = (x - x.mean()) / x.std()
    pad = ((0, -y.shape[0] % 4), (0, -y.shape[1] % 4))  # to a multiple of the total stride (4, 4)
    x, y = np.pad(x, pad, constant_values=x.min()), np.pad(y, pad)
    x, y = torch.from_numpy(x)[None, None], torch.from_numpy(y)[None]
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y.flip(-1)])  # the slice and its mirror image


@pytest.mark.realdata
def test_tiny_2d_network_overfits_a_real_hippocampus_slice(shared_data):
    x, y = _middle_slice(shared_data / "msd_hippocampus")
    assert sorted(y.unique().tolist()) == [0, 1, 2]
    # The point-wise head with the FSAD bridge: 2D convs and 2D deformable attention both train. (The
    # decoupled head needs more steps on structures this small, in 2D as with a depth-1 3D network.)
    cfg = ModelConfig.preset(
        "tiny",
        in_channels=1,
        num_classes=3,
        features_per_stage=(8, 16, 32),
        strides=((1, 1), (2, 2), (2, 2)),
        kernel_sizes=((3, 3),) * 3,
        head="pointwise",
        bridge="fsad",
    )
    model = _model(cfg)
    criterion = build_criterion(cfg)
    optimiser = torch.optim.AdamW(model.param_groups(1e-2, transformer_lr_ratio=1.0, weight_decay=0.0))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(OVERFIT_STEPS):
        loss = criterion(model(x), y, generator=gen).total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = semantic_probs(model(x)).argmax(1)
    dice = [2 * ((pred == k) & (y == k)).sum().item() / ((pred == k).sum() + (y == k).sum()).item() for k in (1, 2)]
    assert min(dice) > TARGET_DICE, f"per-class Dice {dice} after {OVERFIT_STEPS} steps; losses {losses[::20]}"
    assert losses[0] > 5 * losses[-1], "the loss should fall steeply while overfitting"
