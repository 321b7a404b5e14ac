"""QTSeg head (issue 13): shapes in 2D and 3D, gradients, finest-only inference, the coupled loss, an overfit."""

import math

import pytest
import torch
import torch.nn.functional as F

from MaskMedCore.config import ModelConfig
from MaskMedCore.losses import CoupledCriterion, build_criterion
from MaskMedCore.models.heads.qtseg_blocks import ChannelAttention, SpatialAttention
from MaskMedCore.models.heads.qtseg_head import PerTokenMLP, QTSegHead, attention_width, mlfd_sources
from MaskMedCore.models.outputs import semantic_probs

SMALL = dict(dim=32, heads=4, ffn_dim=64, layers_per_stage=1)


def _grids(base, strides):
    """Encoder grids finest first: level i is level i-1 divided by strides[i] (strides[0] is all ones)."""
    grids, grid = [], tuple(base)
    for stride in strides:
        grid = tuple(g // s for g, s in zip(grid, stride))
        grids.append(grid)
    return grids


def _inputs(encoder_channels, base, strides, batch=2, seed=0):
    """Encoder outputs (finest first) and UNet-like decoder features (coarsest first, at levels S-1..0)."""
    gen = torch.Generator().manual_seed(seed)
    grids = _grids(base, strides)
    skips = [torch.randn(batch, c, *g, generator=gen) for c, g in zip(encoder_channels, grids)]
    S = len(encoder_channels) - 1
    features = [torch.randn(batch, encoder_channels[S - 1 - s], *grids[S - 1 - s], generator=gen) for s in range(S)]
    return features, skips


def _head(encoder_channels, num_classes, spatial_dims, **kwargs):
    decoder_channels = tuple(reversed(encoder_channels[:-1]))
    return QTSegHead(decoder_channels, encoder_channels, num_classes, spatial_dims, **{**SMALL, **kwargs})


# (spatial_dims, encoder channels, input grid, per-level strides)
CASES = [
    (2, (8, 16, 24), (16, 16), ((1, 1), (2, 2), (2, 1))),  # grids (16, 16), (8, 8), (4, 8)
    (2, (8, 16, 24, 32), (16, 32), ((1, 1), (2, 2), (1, 2), (2, 2))),  # 4 levels, anisotropic
    (3, (8, 16), (8, 8, 8), ((1, 1, 1), (2, 2, 2))),  # one decoder stage
    (3, (8, 16, 32, 64), (4, 16, 16), ((1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 2, 2))),  # (4,16,16)..(2,2,2)
    (3, (6, 8, 12, 16, 20), (8, 16, 32), ((1, 1, 1), (2, 2, 2), (1, 2, 2), (2, 2, 2), (2, 1, 2))),
]


def _case_id(case):
    return f"{case[0]}d-{len(case[1])}levels-{'x'.join(map(str, case[2]))}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_output_shapes_and_convention(case):
    spatial_dims, channels, base, strides = case
    torch.manual_seed(0)
    K = 3
    head = _head(channels, K, spatial_dims)
    features, skips = _inputs(channels, base, strides)
    out = head(features, skips=skips)
    S = len(channels) - 1
    assert [tuple(m.shape) for m in out.mask_logits] == [(2, K, *f.shape[2:]) for f in features]
    assert tuple(out.mask_logits[-1].shape[2:]) == tuple(base)
    assert not out.decoupled and out.num_classes == K
    assert torch.equal(out.class_logits, torch.eye(K, K + 1).expand(2, K, K + 1))
    assert len(out.stage_class_logits) == S
    assert tuple(out.class_embeddings.shape) == (2, K, K)
    assert tuple(out.mask_embeddings.shape) == (2, K, channels[0])
    assert all(torch.isfinite(m).all() for m in out.mask_logits)
    # The two images of the batch are predicted independently.
    single = head([f[1:] for f in features], skips=[t[1:] for t in skips])
    torch.testing.assert_close(single.mask_logits[-1], out.mask_logits[-1][1:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=_case_id)
def test_finest_only_matches_all_stages(case):
    spatial_dims, channels, base, strides = case
    torch.manual_seed(1)
    head = _head(channels, 4, spatial_dims).eval()
    features, skips = _inputs(channels, base, strides, seed=1)
    full = head(features, all_stages=True, skips=skips)
    finest = head(features, all_stages=False, skips=skips)
    assert len(finest.mask_logits) == 1 and len(finest.stage_class_logits) == 1
    assert torch.equal(finest.mask_logits[0], full.mask_logits[-1])
    assert torch.equal(finest.mask_embeddings, full.mask_embeddings)


def _grads(head, loss):
    head.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad for name, p in head.named_parameters()}


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=_case_id)
def test_gradients_reach_every_parameter(case):
    spatial_dims, channels, base, strides = case
    torch.manual_seed(2)
    head = _head(channels, 3, spatial_dims, layers_per_stage=2)
    features, skips = _inputs(channels, base, strides, seed=2)
    gen = torch.Generator().manual_seed(3)
    S = len(channels) - 1

    # Deep supervision: every stage's logits in the loss -> every parameter learns.
    out = head(features, skips=skips)
    loss = sum((m * torch.randn(m.shape, generator=gen)).sum() for m in out.mask_logits)
    grads = _grads(head, loss)
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    # CAB's gamma starts at 0: it gets a gradient, though nothing flows *through* the branch yet.
    gammas = [n for n in grads if n.endswith("cab.gamma")]
    assert len(gammas) == 2 * S and all(grads[n].abs().item() > 0 for n in gammas)
    assert all(grads[n].abs().sum() > 0 for n in grads if "stages.0." in n and "cab" not in n)

    # Only the finest logits: the tokens and features of every stage still feed them; only the
    # coarser stages' mask MLPs (used for their own logits alone) stay out of the graph.
    out = head(features, all_stages=False, skips=skips)
    grads = _grads(head, (out.mask_logits[-1] * torch.randn(out.mask_logits[-1].shape, generator=gen)).sum())
    unused = {n for n, g in grads.items() if g is None}
    assert unused == {n for n in grads if n.startswith("mask_mlps.") and not n.startswith(f"mask_mlps.{S - 1}.")}
    assert all(grads[n].abs().sum() > 0 for n in grads if n.startswith(("stages.0.", "mlfd.", "tokens")))


def _config(**overrides):
    return ModelConfig.preset("tiny", in_channels=1, num_classes=3, head="qtseg", bridge="none", **overrides)


def test_coupled_criterion_and_inference_3d():
    cfg = _config()
    criterion = build_criterion(cfg)
    assert isinstance(criterion, CoupledCriterion)
    channels = cfg.features_per_stage
    torch.manual_seed(3)
    head = _head(channels, cfg.num_classes, 3)
    features, skips = _inputs(channels, (16, 16, 16), cfg.strides, seed=3)
    labels = torch.randint(0, cfg.num_classes, (2, 16, 16, 16), generator=torch.Generator().manual_seed(4))
    result = criterion(head(features, skips=skips), labels)
    assert math.isfinite(result.terms["total"]) and result.total.requires_grad
    assert set(result.terms) >= {"stage0/ce", "stage2/dice"}
    result.total.backward()
    probs = semantic_probs(head(features, all_stages=False, skips=skips))
    assert tuple(probs.shape) == (2, 3, 16, 16, 16)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16, 16))


def test_coupled_criterion_2d():
    cfg = _config(kernel_sizes=((3, 3),) * 4, strides=((1, 1),) + ((2, 2),) * 3)
    criterion = build_criterion(cfg)
    channels = cfg.features_per_stage
    torch.manual_seed(4)
    head = _head(channels, cfg.num_classes, 2)
    features, skips = _inputs(channels, (16, 24), cfg.strides, seed=4)
    labels = torch.randint(0, cfg.num_classes, (2, 16, 24), generator=torch.Generator().manual_seed(5))
    result = criterion(head(features, skips=skips), labels)
    assert math.isfinite(result.terms["total"])
    result.total.backward()
    probs = semantic_probs(head(features, all_stages=False, skips=skips))
    assert tuple(probs.shape) == (2, 3, 16, 24)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 24))


def _sphere_inputs(channels, size, gen):
    """A noisy sphere image turned into encoder/decoder features (channel 0 the image, the rest noise)."""
    axes = [torch.arange(size, dtype=torch.float32) - (size - 1) / 2] * 3
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    target = (zz**2 + yy**2 + xx**2 <= (size / 3.2) ** 2).long()  # (D, H, W)
    image = target.float() + 0.3 * torch.randn(size, size, size, generator=gen)

    def level(c, grid):
        pooled = F.adaptive_avg_pool3d(image[None, None], grid)  # (1, 1, *grid)
        return torch.cat([pooled, 0.5 * torch.randn(1, c - 1, *grid, generator=gen)], dim=1)

    grids = [(size // 2**i,) * 3 for i in range(len(channels))]
    skips = [level(c, g) for c, g in zip(channels, grids)]
    S = len(channels) - 1
    features = [level(channels[S - 1 - s], grids[S - 1 - s]) for s in range(S)]
    return features, skips, target[None]


def _foreground_dice(pred, target):
    inter = ((pred == 1) & (target == 1)).sum().item()
    return 2 * inter / max((pred == 1).sum().item() + (target == 1).sum().item(), 1)


def test_overfits_a_3d_sphere():
    torch.set_num_threads(1)
    torch.manual_seed(5)
    channels = (8, 16, 32)
    features, skips, target = _sphere_inputs(channels, 16, torch.Generator().manual_seed(6))
    head = QTSegHead((16, 8), channels, 2, 3, dim=32, heads=4, ffn_dim=64, layers_per_stage=1)
    criterion = CoupledCriterion(2)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    start = _foreground_dice(semantic_probs(head(features, skips=skips)).argmax(1), target)
    for _ in range(60):
        optimizer.zero_grad(set_to_none=True)
        criterion(head(features, skips=skips), target).total.backward()
        optimizer.step()
    with torch.no_grad():
        dice = _foreground_dice(semantic_probs(head(features, all_stages=False, skips=skips)).argmax(1), target)
    assert start < 0.8 and dice > 0.9, (start, dice)


def test_per_token_mlp_is_one_mlp_per_token():
    torch.manual_seed(7)
    mlp = PerTokenMLP(3, 6, 5, 4)
    x = torch.randn(2, 3, 6)
    out = mlp(x)
    for k in range(3):
        y = x[:, k]
        for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
            y = y @ w[k] + b[k]
            y = F.relu(y) if i < 2 else y
        torch.testing.assert_close(out[:, k], y)


def test_sam_and_cab_formulas():
    torch.manual_seed(8)
    x = torch.randn(2, 4, 5, 6)
    sam = SpatialAttention(2)
    with torch.no_grad():
        sam.conv.weight.zero_()
    torch.testing.assert_close(sam(x), 1.5 * x)  # sigmoid(0) = 1/2
    cab = ChannelAttention()
    assert torch.equal(cab(x), x)  # gamma = 0: identity
    with torch.no_grad():
        cab.gamma.fill_(0.5)
    flat = x.flatten(2).double()
    energy = flat @ flat.transpose(1, 2)
    attn = torch.softmax(energy.max(-1, keepdim=True).values - energy, dim=-1)
    expected = 0.5 * (attn @ flat).view(x.shape) + x.double()
    torch.testing.assert_close(cab(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_mlfd_windows_and_attention_widths():
    assert list(mlfd_sources(0, 5)) == [0, 1, 2]
    assert list(mlfd_sources(2, 5)) == [1, 2, 3]
    assert list(mlfd_sources(3, 5)) == [2, 3, 4]
    assert list(mlfd_sources(0, 2)) == [0, 1]
    # Half the stage width (upstream's downsample rate 2), a multiple of the heads, at least one per head.
    assert [attention_width(c, 8) for c in (320, 32, 12, 6)] == [160, 16, 8, 8]
    assert attention_width(8, 4) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(encoder_channels=(8, 16)), "encoder_channels has 2"),
        (dict(dim=30), "divisible"),
        (dict(layers_per_stage=0), "layers_per_stage"),
        (dict(decoder_channels=(16, 7)), "even"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(decoder_channels=(16, 8), encoder_channels=(8, 16, 32), num_classes=2, spatial_dims=3, **SMALL)
    with pytest.raises(ValueError, match=match):
        QTSegHead(**{**args, **kwargs})


def test_bad_inputs():
    channels = (8, 16, 32)
    head = _head(channels, 2, 3)
    features, skips = _inputs(channels, (8, 8, 8), ((1, 1, 1), (2, 2, 2), (2, 2, 2)))
    with pytest.raises(ValueError, match="skips=skips"):
        head(features)
    with pytest.raises(ValueError, match="encoder outputs"):
        head(features, skips=skips[:-1])
    with pytest.raises(ValueError, match=r"skips\[1\] has shape"):
        head(features, skips=[skips[0], skips[1][:, :4], skips[2]])
    with pytest.raises(ValueError, match="features\\[0\\] has grid"):
        head([features[0][..., :2], features[1]], skips=skips)
    with pytest.raises(ValueError, match="3D head"):
        head([f[:, :, 0] for f in features], skips=skips)
