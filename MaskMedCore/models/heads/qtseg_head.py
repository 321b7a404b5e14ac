"""QTSeg's query-token decoder as a MaskMed head (issue 13; QTSeg, arXiv 2412.17241, §3).

One fixed token per class refines stage by stage over MaskMed's UNet decoder features, coarsest
first, and each stage's per-class logits are token . feature dot products. The output follows the
point-wise head's convention (``PointwiseHead``): Q = K, ``class_logits`` the identity ``[I | 0]``,
``decoupled`` False, so the coupled criterion (CE + Dice on per-class logits) and inference are
unchanged. This is the "fixed class queries vs Hungarian-matched queries" ablation baseline.

Per decoder stage s (grid S_s, C_s channels), coarsest first:

1. ``x = decoder_s + MLFD_s(encoder levels) + carry(x_{s-1})``.
2. ``tokens, x = DMA stage(tokens, x, sine PE)`` (qtseg_blocks.py).
3. ``mask_logits[s] = PerTokenMLP_s(tokens) . x``: (B, K, *S_s).

What follows QTSeg (official code github.com/tpnam0901/QTSeg, ``decoder/models.py``, ``modules.py``):

- fixed class tokens ``nn.Embedding(K, E)``, token i is class i, no matching; CE + Dice on the stacked
  per-class logits (MaskMed's coupled criterion);
- the DMA block exactly as upstream's ``DMABlock``: SAM (7-wide kernel) and CAB (gamma init 0) on
  ``x + pos``; token -> feature attention with each as keys/values, summed with the tokens, LayerNorm;
  ``tokens = LN(MLP(mixed)) + tokens``; feature <- token attention with queries ``SAM + CAB + pos``
  and keys/values the mixed tokens, added to the features; after ``depth`` blocks the final token ->
  feature attention (query PE = the stage's input tokens) + LayerNorm;
- SAM-style attention projected to half the stage's width C_s (downsample rate 2; rounded to a
  multiple of ``heads``), GELU token MLP;
- the refined features of a stage are upsampled (+ LayerNorm + GELU) and added to the next stage's input;
- a separate 3-layer ReLU MLP per token maps tokens to the mask embedding (upstream's per-stage
  per-token MLPs), and masks are ``tokens @ features``;
- MLFD: each stage mixes several encoder levels, 1x1 conv at its own level, 3-wide conv with
  stride r from a finer level.

What departs, and why:

- no YOLOv8 encoder or PAN neck: the features are MaskMed's UNet decoder outputs and the MLFD reads
  the UNet encoder outputs (skips), and its result is *added* to the decoder feature of the stage
  (the UNet decoder already consumed the same-level skip);
- MLFD windows: upstream mixes its three levels into each of the three; here each stage mixes three
  consecutive encoder levels around its own (bottleneck included; the two nearest on one side at
  the ends), which is upstream's rule when there are three levels; the branch outputs (C_s channels
  each) are summed, then LayerNorm + SiLU (upstream: C_s split between concatenated branches, which
  leaves < 1 channel per branch on narrow 3D stages);
- the head is not told the UNet strides, so resampling ratios are read from the tensors: a finer
  level uses a 3-wide conv whose stride is that ratio (as upstream), but a coarser level and the
  stage-to-stage carry use a 1x1 conv + (bi/tri)linear interpolation instead of a transposed conv
  with kernel = stride = ratio (for nearest interpolation these are the same with tied taps);
- one token width E (``dim``) through all stages; the features keep their own C_s and the attention
  projections map between E and C_s (upstream widens/narrows tokens to each stage's width with the
  per-token MLPs). This avoids an E-channel copy of every full-resolution 3D map. The per-token
  MLPs give each stage's mask embedding (width C_s) instead;
- masks at every decoder stage (deep supervision), the finest at input resolution (upstream: one
  mask at 1/2 resolution, bilinearly upsampled);
- MaskMed's deterministic sine positional encoding (``layers.position_encoding``, 2D or 3D) at each
  stage's width C_s instead of SAM's random-Fourier ``PositionEmbeddingRandom`` (so C_s must be even);
- ``layers_per_stage`` DMA blocks at every stage (upstream: 3, 2, 1 from coarse to fine);
- CAB's C x C affinity in float32 with autocast off (it sums over every voxel).

Memory: the attention maps are (K x N) and (N x K) for N voxels of a stage, and CAB's is (C x C), so
nothing is quadratic in voxels. The attention width follows C_s, so the full-resolution stage (the
narrowest) holds a few (B, N, C_0/2) projections, not (B, N, E/2) ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.layers.position_encoding import sine_position_encoding
from MaskMedCore.models.heads.qtseg_blocks import CONV, LINEAR_MODE, ChannelLayerNorm, DualMixAttentionStage
from MaskMedCore.models.outputs import MaskMedOutput

CONV_FN = {2: F.conv2d, 3: F.conv3d}
MLFD_WINDOW = 3
"""Encoder levels mixed into each decoder stage (upstream: its three levels)."""
ATTENTION_DOWNSAMPLE = 2
"""QTSeg's attention downsample rate: q, k, v are projected to half the stage's width."""


def attention_width(channels: int, heads: int) -> int:
    """Internal attention width of a stage with ``channels`` features: ``channels / 2`` as upstream (whose
    tokens share the stage's width), rounded down to a multiple of ``heads``, at least ``heads``."""
    return max(heads, channels // ATTENTION_DOWNSAMPLE // heads * heads)


def mlfd_sources(level: int, n_levels: int, window: int = MLFD_WINDOW) -> range:
    """The ``window`` consecutive encoder levels around ``level`` (shifted inside 0..n_levels-1)."""
    width = min(window, n_levels)
    first = min(max(level - (width - 1) // 2, 0), n_levels - width)
    return range(first, first + width)


class MultiLevelFeatureDistribution(nn.Module):
    """MLFD: each target level gets a mix of nearby encoder levels, resampled to its grid and width.

    Branch from source level i to target level l: a 1x1 conv when i == l; a 3-wide conv with stride
    ``S_i / S_l`` when i is finer; a 1x1 conv then linear interpolation when i is coarser. The
    branches are summed, then LayerNorm + SiLU.

    Args:
        encoder_channels: channels of every encoder level, finest first (bottleneck last).
        target_channels: output channels of target levels 0..T-1 (finest first), T < len(encoder_channels).
        spatial_dims: 2 or 3.
    """

    def __init__(self, encoder_channels: Sequence[int], target_channels: Sequence[int], spatial_dims: int) -> None:
        super().__init__()
        conv = CONV[spatial_dims]
        self.spatial_dims = spatial_dims
        self.sources = [list(mlfd_sources(t, len(encoder_channels))) for t in range(len(target_channels))]
        self.branches = nn.ModuleList(
            nn.ModuleList(
                conv(encoder_channels[i], c, 3 if i < t else 1, padding=1 if i < t else 0, bias=False)
                for i in self.sources[t]
            )
            for t, c in enumerate(target_channels)
        )
        self.norms = nn.ModuleList(ChannelLayerNorm(c) for c in target_channels)

    def forward(self, skips: Sequence[Tensor], level: int) -> Tensor:
        """The distributed features of one target level.

        Args:
            skips: encoder outputs finest first, entry i (B, C_i, *S_i).
            level: target level t (its grid is ``skips[t]``'s).

        Returns:
            (B, C_t, *S_t).
        """
        target = tuple(skips[level].shape[2:])
        out = None
        for i, branch in zip(self.sources[level], self.branches[level], strict=True):
            src = skips[i]
            if i < level:  # finer: the branch holds a 3-wide kernel; its stride is the ratio (upstream's s2 / s4)
                stride = tuple(a // b for a, b in zip(src.shape[2:], target, strict=True))
                y = CONV_FN[self.spatial_dims](src, branch.weight, None, stride=stride, padding=1)
            else:
                y = branch(src)
                if i > level:  # coarser: 1x1 conv on the small grid, then upsample
                    y = F.interpolate(y, size=target, mode=LINEAR_MODE[self.spatial_dims], align_corners=False)
            if tuple(y.shape[2:]) != target:
                raise ValueError(
                    f"encoder level {i} has grid {tuple(src.shape[2:])}, which does not resample to level "
                    f"{level}'s grid {target} by an integer ratio; encoder grids must divide each other"
                )
            out = y if out is None else out + y
        assert out is not None
        return F.silu(self.norms[level](out))


class PerTokenMLP(nn.Module):
    """A separate ``n_layers`` ReLU MLP for each of ``num_tokens`` tokens (QTSeg's / SAM's per-token MLPs).

    The K MLPs are stored as batched weights (K, in, out) and run in one einsum.

    Args:
        num_tokens: K.
        in_dim: input width.
        hidden: hidden width.
        out_dim: output width.
        n_layers: linear layers (ReLU between them, none after the last).
    """

    def __init__(self, num_tokens: int, in_dim: int, hidden: int, out_dim: int, n_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default init, per token
            self.weights.append(nn.Parameter(torch.empty(num_tokens, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_tokens, b).uniform_(-bound, bound)))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, K, in_dim) -> (B, K, out_dim); token k goes through MLP k."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.einsum("bki,kio->bko", x, w) + b
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x


class QTSegHead(nn.Module):
    """QTSeg's query-token decoder over MaskMed's UNet features (see the module docstring).

    Args:
        decoder_channels: C_s of the decoder features, coarsest first (S stages); even, >= 2 per axis.
        encoder_channels: channels of the encoder outputs, finest first, S + 1 of them (bottleneck last).
        num_classes: K, background included; one token per class.
        spatial_dims: 2 (features (B, C, H, W)) or 3 ((B, C, D, H, W)).
        dim: E, token width (divisible by ``heads``).
        heads: attention heads M.
        ffn_dim: hidden width of the token MLPs.
        layers_per_stage: DMA blocks per decoder stage.
        dropout: attention and residual dropout.

    Raises:
        ValueError: an argument is out of range or the channel lists do not fit together.
    """

    uses_encoder_skips = True
    """``forward`` needs the encoder outputs (``skips=``) besides the decoder features."""

    def __init__(
        self,
        decoder_channels: Sequence[int],
        encoder_channels: Sequence[int],
        num_classes: int,
        spatial_dims: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        layers_per_stage: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in CONV:
            raise ValueError(f"spatial_dims must be one of {sorted(CONV)}, got {spatial_dims}")
        for name, value in (
            ("num_classes", num_classes),
            ("dim", dim),
            ("heads", heads),
            ("ffn_dim", ffn_dim),
            ("layers_per_stage", layers_per_stage),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if any(c % 2 or c < 2 * spatial_dims for c in decoder_channels):
            raise ValueError(
                f"decoder_channels {tuple(decoder_channels)} must all be even and >= {2 * spatial_dims} "
                f"(the {spatial_dims}D sine positional encoding gives each axis sin/cos pairs)"
            )
        if not decoder_channels or len(encoder_channels) != len(decoder_channels) + 1:
            raise ValueError(
                f"encoder_channels has {len(encoder_channels)} entries and decoder_channels {len(decoder_channels)}; "
                "a UNet with S >= 1 decoder stages has S + 1 encoder levels"
            )
        self.decoder_channels = tuple(decoder_channels)
        self.encoder_channels = tuple(encoder_channels)
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        S = len(decoder_channels)

        self.tokens = nn.Embedding(num_classes, dim)  # token k is class k
        # Decoder stage s sits at encoder level S-1-s; the MLFD is indexed by level (finest first).
        self.mlfd = MultiLevelFeatureDistribution(encoder_channels, self.decoder_channels[::-1], spatial_dims)
        conv = CONV[spatial_dims]
        self.carry_convs = nn.ModuleList(conv(decoder_channels[s - 1], decoder_channels[s], 1) for s in range(1, S))
        self.carry_norms = nn.ModuleList(ChannelLayerNorm(decoder_channels[s]) for s in range(1, S))
        self.stages = nn.ModuleList(
            DualMixAttentionStage(
                c, dim, attention_width(c, heads), heads, ffn_dim, layers_per_stage, spatial_dims, dropout
            )
            for c in decoder_channels
        )
        self.mask_mlps = nn.ModuleList(PerTokenMLP(num_classes, dim, dim, c) for c in decoder_channels)

    def identity_class_logits(self, batch: int, like: Tensor) -> Tensor:
        """``[I_cls | 0]``: (B, K, K+1), token k is class k (no no-object class)."""
        K = self.num_classes
        return torch.eye(K, K + 1, device=like.device, dtype=like.dtype).expand(batch, K, K + 1)

    def check_inputs(self, features: Sequence[Tensor], skips: Sequence[Tensor] | None) -> None:
        """Raise ValueError unless ``features`` and ``skips`` fit the channel lists and each other."""
        S, nd = len(self.decoder_channels), self.spatial_dims
        if skips is None:
            raise ValueError("QTSegHead needs the encoder outputs: call it as head(features, skips=skips)")
        if len(features) != S or len(skips) != S + 1:
            raise ValueError(
                f"got {len(features)} decoder features and {len(skips)} encoder outputs; this head was built "
                f"for {S} and {S + 1}"
            )
        named = [(f"features[{s}]", f, c) for s, (f, c) in enumerate(zip(features, self.decoder_channels))]
        named += [(f"skips[{i}]", t, c) for i, (t, c) in enumerate(zip(skips, self.encoder_channels))]
        for name, t, c in named:
            if t.dim() != nd + 2 or t.shape[1] != c:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}; expected (B, {c}, {', '.join('DHW'[-nd:])}) "
                    f"for this {nd}D head"
                )
        for s, f in enumerate(features):
            skip = skips[S - 1 - s]
            if f.shape[2:] != skip.shape[2:]:
                raise ValueError(
                    f"features[{s}] has grid {tuple(f.shape[2:])} but encoder level {S - 1 - s} (skips[{S - 1 - s}]) "
                    f"has {tuple(skip.shape[2:])}; decoder stage s must sit at encoder level S-1-s"
                )

    def forward(
        self, features: list[Tensor], all_stages: bool = True, skips: list[Tensor] | None = None
    ) -> MaskMedOutput:
        """Per-class mask logits of every decoder stage.

        Args:
            features: decoder outputs coarsest first, entry s (B, C_s, *S_s); the last at input resolution.
            all_stages: compute every stage's mask logits (deep supervision); False: only the finest
                (the tokens are still refined through every stage).
            skips: encoder outputs finest first, entry i (B, encoder_channels[i], *S_i), bottleneck last.

        Returns:
            MaskMedOutput with Q = K: ``mask_logits`` entry s (B, K, *S_s) (one entry without
            ``all_stages``), ``class_logits`` (B, K, K+1) = ``[I | 0]``, ``mask_embeddings`` (B, K, C_0)
            (the finest stage's, whose dot product with its refined features gives its logits),
            ``decoupled`` False.

        Raises:
            ValueError: the inputs do not fit the head (see ``check_inputs``).
        """
        self.check_inputs(features, skips)
        assert skips is not None
        S = len(features)
        B = features[0].shape[0]
        tokens = self.tokens.weight.unsqueeze(0).expand(B, -1, -1)  # (B, K, E)
        masks, prev = [], None
        for s, feature in enumerate(features):
            spatial = tuple(feature.shape[2:])
            x = feature + self.mlfd(skips, S - 1 - s)
            if prev is not None:  # carry the previous stage's refined features (upstream: ConvT + LN + GELU)
                up = F.interpolate(
                    self.carry_convs[s - 1](prev),
                    size=spatial,
                    mode=LINEAR_MODE[self.spatial_dims],
                    align_corners=False,
                )
                x = x + F.gelu(self.carry_norms[s - 1](up))
            pos = sine_position_encoding(spatial, x.shape[1], x.device)  # (N, C_s)
            pos = pos.t().reshape(1, -1, *spatial).to(x.dtype)  # (N, C_s) -> (1, C_s, *S_s)
            tokens, x = self.stages[s](tokens, x, pos)
            prev = x
            if all_stages or s == S - 1:
                embedding = self.mask_mlps[s](tokens)  # (B, K, C_s)
                logits = embedding @ x.flatten(2)  # (B, K, C_s) @ (B, C_s, N) -> (B, K, N)
                masks.append(logits.view(B, self.num_classes, *spatial))
        cls = self.identity_class_logits(B, masks[-1])
        return MaskMedOutput(
            class_logits=cls,
            mask_logits=masks,
            stage_class_logits=[cls] * len(masks),
            class_embeddings=cls[..., :-1],
            mask_embeddings=embedding,
            decoupled=False,
        )
