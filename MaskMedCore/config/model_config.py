"""Model configuration: a frozen, JSON round-trippable description of one MaskMed network.

The paper's ablation variants (MaskMed Tables 3 and 4) are fields of this config, not separate
code paths:

- ``head``: the segmentation head (Table 3, Fig. 1b-f).
- ``queries``: one query set per decoder stage or one shared set (Table 4, rows 1-2).
- ``masked_attention``: inter-stage masked cross-attention (Table 4, row 3).
- ``bridge``: what sits between encoder skips and decoder (Table 4, rows 4-6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.config.validation import (
    check_choice,
    check_positive_int,
    check_triplets,
    reject_unknown_keys,
)
from MaskMedCore.errors import ConfigError

HEADS = ("pointwise", "mlp_cls", "attn_cls", "attn_cls_mask", "decoupled", "qtseg")
"""Segmentation heads, in the order of the paper's Table 3 (Fig. 1b, c, d, e, f), then ``qtseg``: QTSeg's
query-token decoder (one fixed token per class, dual-mix attention, multi-level feature distribution; issue 13),
an ablation baseline of fixed class tokens against Hungarian-matched queries."""
FIXED_QUERY_HEADS = ("pointwise", "qtseg")
"""Heads with exactly one output per class and no matching (trained with CE + Dice on per-class logits)."""
SPATIAL_DIMS = (2, 3)
"""Networks are 2D (kernels/strides are (H, W) pairs, input (B, C, H, W)) or 3D ((D, H, W) triplets)."""

QUERY_MODES = ("per_stage", "shared")
ENCODERS = ("plain", "residual")
"""UNet encoders: nnU-Net's PlainConvUNet encoder or its ResEnc (ResidualEncoderUNet) encoder."""
BRIDGES = ("none", "standard", "deformable", "fsad")
PRESETS = ("paper", "tiny")
INSTANCE_QUERIES_PER_CLASS = 10
"""Default extra queries per instance class (the most instances of that class one patch can hold)."""

Triplet = tuple[int, ...]
"""Per-axis integers: (D, H, W) for a 3D network, (H, W) for a 2D one."""


def default_features(n_stages: int, base: int = 32, cap: int = 320) -> tuple[int, ...]:
    """nnU-Net's feature rule: ``min(base * 2**i, cap)`` for stage i."""
    return tuple(min(base * 2**i, cap) for i in range(n_stages))


BRIDGE_QUERY_MIN_STRIDE = 8
"""A stage provides bridge queries when its voxels are at least ``8 ** dims`` times fewer than the input's
(total stride product >= 8 x 8 x 8 in 3D, 8 x 8 in 2D)."""
BRIDGE_QUERY_MAX_STAGES = 3
"""The paper's "smallest three scales" (appendix B)."""


def default_bridge_query_stages(strides: tuple[Triplet, ...] | list[Triplet]) -> int:
    """How many of the coarsest stages give the FSAD bridge its queries, from the topology.

    The paper takes queries from the *low-resolution* stages ("the smallest three scales", appendix B;
    "the lowest four stages", section 3.3) of nnU-Net's 6-stage AMOS network, where the three coarsest
    stages are downsampled 8x, 16x and 32x per axis. A fixed count does not carry over to other plans:
    on a 4-stage plan (e.g. MSD hippocampus, 40x56x40) the third-coarsest stage is the stride-2 one,
    whose 78k tokens per batch made the bridge 9x slower than the network without it. The rule is
    therefore by resolution: stages whose total stride product is at least 8^3 (on every plan of the
    paper's kind this is the paper's 3), at most 3 of them, and at least the coarsest one.

    Args:
        strides: per-stage (D, H, W) strides (or (H, W) for a 2D network), finest first.
    """
    products, acc = [], 1
    for s in strides:
        acc *= math.prod(s)
        products.append(acc)
    threshold = BRIDGE_QUERY_MIN_STRIDE ** len(strides[0])
    low_resolution = sum(1 for p in products if p >= threshold)
    return max(1, min(BRIDGE_QUERY_MAX_STAGES, low_resolution))


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
    if any(isinstance(v, bool) or float(v) != int(v) for v in value):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}")
    return out


def _case_tasks(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Normalise ``[[name, [class, ...]], ...]`` (e.g. from JSON) and check names and class counts."""
    example = 'e.g. [["lesion_count", ["none", "one", "several"]]]'
    tasks = []
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise ConfigError(f"case_tasks entry {entry!r} is not [task name, [class names]]; {example}")
        name, classes = entry
        if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
            raise ConfigError(f"case_tasks['{name}'] classes must be a list of non-empty names, got {classes!r}")
        classes = tuple(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"case_tasks['{name}'] needs at least 2 distinct classes, got {list(classes)}")
        tasks.append((name, classes))
    names = [t[0] for t in tasks]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"case_tasks names must be distinct and non-empty, got {names}")
    return tuple(tasks)


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Everything needed to build a MaskMed network (``MaskMedCore.build_model``).

    Shapes: the network takes ``(B, C, D, H, W)`` with ``C = in_channels`` and predicts
    ``K = num_classes`` classes. A 2D network (``kernel_sizes``/``strides`` given as (H, W) pairs,
    ``spatial_dims`` 2) takes ``(B, C, H, W)``, and a ``(B, C, D, H, W)`` volume slice by slice. Background
    is class 0 and is an ordinary class with its own query (see README, "Background"); ``K`` therefore
    counts background.

    Attributes:
        in_channels: input channels C (e.g. 2 for FLAIR + T1c).
        num_classes: classes K including background (label values 0..K-1).
        features_per_stage: encoder channels per stage, finest first.
        kernel_sizes: per-stage (kD, kH, kW) conv kernels, finest first; (kH, kW) pairs make a 2D network.
        strides: per-stage (sD, sH, sW) downsampling strides; stage 0 must be all ones. Pairs (2D) or
            triplets (3D), as ``kernel_sizes``.
        encoder: ``plain`` (conv blocks, nnU-Net's PlainConvUNet) or ``residual`` (stem + residual
            blocks, nnU-Net's ResidualEncoderUNet); one of ``ENCODERS``. The decoder is the same for both.
        n_conv_per_stage: conv blocks per stage of the ``plain`` encoder (unused by ``residual``).
        n_blocks_per_stage: residual blocks per stage of the ``residual`` encoder, one count per stage
            (nnU-Net ResEnc: (1, 3, 4, 6, 6, 6)); must be unset (None) for ``plain``.
        n_conv_per_stage_decoder: conv blocks per decoder stage.
        head: segmentation head variant, one of ``HEADS``.
        queries: ``shared`` (one query set propagated from the coarsest decoder stage upward)
            or ``per_stage`` (an independent query set per decoder stage).
        num_queries: Q; ``None`` means Q = K, the paper's best setting (Table 6).
        masked_attention: mask each stage's cross-attention with the previous stage's masks.
        head_dim: transformer width E of the segmentation head.
        head_heads: attention heads of the segmentation head.
        head_ffn_dim: hidden width of the head's feed-forward layers.
        head_layers_per_stage: transformer blocks per decoder stage.
        head_max_tokens: cross-attention memory is average-pooled to at most this many tokens.
        bridge: encoder-decoder bridge, one of ``BRIDGES``.
        bridge_query_stages: how many of the coarsest encoder stages provide bridge queries
            (paper: 3 in appendix B, 4 in section 3.3); presets derive it from the strides with
            :func:`default_bridge_query_stages`.
        bridge_dim: transformer width of the bridge.
        bridge_heads: attention heads M of the bridge.
        bridge_points: sampling points P per (head, level) of deformable attention.
        bridge_layers: stacked bridge layers.
        bridge_ffn_dim: hidden width of the bridge's feed-forward layers.
        dropout: dropout inside transformer layers (Mask2Former uses 0).
        deep_supervision: return predictions of every decoder stage (training) or only the
            finest (inference). Changes outputs, never the state dict.
        instance_classes: label values (1..K-1) predicted as instances (issue 12): every 26-connected
            component of such a class is its own target segment, matched to its own query, and
            prediction writes an instance label map. Empty (default): every class is semantic.
        box_head: decoupled head only: also predict a 3D box per query, ``(B, Q, 6)`` sigmoid
            ``(cz, cy, cx, d, h, w)`` as fractions of the input patch's (D, H, W).
        case_tasks: case-level classification tasks read from the final queries, one
            ``(task name, (class name, ...))`` per task (decoupled head only). Empty: no case head.
    """

    config_name: ClassVar[str] = "model config"

    in_channels: int
    num_classes: int
    features_per_stage: tuple[int, ...] = default_features(6)
    kernel_sizes: tuple[Triplet, ...] = ((3, 3, 3),) * 6
    strides: tuple[Triplet, ...] = ((1, 1, 1),) + ((2, 2, 2),) * 5
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2
    # The two encoder fields come after the original ones with defaults that give the plain encoder, so
    # configs and checkpoints written before they existed load unchanged and build the same network.
    encoder: str = "plain"
    n_blocks_per_stage: tuple[int, ...] | None = None
    head: str = "decoupled"
    queries: str = "shared"
    num_queries: int | None = None
    masked_attention: bool = True
    head_dim: int = 192
    head_heads: int = 8
    head_ffn_dim: int = 1024
    head_layers_per_stage: int = 1
    head_max_tokens: int = 4096
    bridge: str = "fsad"
    bridge_query_stages: int = 3
    bridge_dim: int = 192
    bridge_heads: int = 8
    bridge_points: int = 4
    bridge_layers: int = 3
    bridge_ffn_dim: int = 768
    dropout: float = 0.0
    deep_supervision: bool = True
    # Multi-task fields (issue 12), last and defaulted so configs and checkpoints written before them load.
    instance_classes: tuple[int, ...] = ()
    box_head: bool = False
    case_tasks: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) to tuples so the config stays hashable and frozen.
        object.__setattr__(self, "features_per_stage", tuple(int(f) for f in self.features_per_stage))
        object.__setattr__(self, "kernel_sizes", check_triplets("kernel_sizes", self.kernel_sizes, SPATIAL_DIMS))
        object.__setattr__(self, "strides", check_triplets("strides", self.strides, SPATIAL_DIMS))
        if isinstance(self.n_blocks_per_stage, (list, tuple)):
            object.__setattr__(self, "n_blocks_per_stage", tuple(self.n_blocks_per_stage))
        object.__setattr__(self, "instance_classes", _int_tuple("instance_classes", self.instance_classes))
        object.__setattr__(self, "case_tasks", _case_tasks(self.case_tasks))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        for name in (
            "in_channels",
            "num_classes",
            "n_conv_per_stage",
            "n_conv_per_stage_decoder",
            "head_dim",
            "head_heads",
            "head_ffn_dim",
            "head_layers_per_stage",
            "head_max_tokens",
            "bridge_query_stages",
            "bridge_dim",
            "bridge_heads",
            "bridge_points",
            "bridge_layers",
            "bridge_ffn_dim",
        ):
            check_positive_int(name, getattr(self, name))
        if self.num_classes < 2:
            raise ConfigError(f"num_classes is {self.num_classes}; it counts background, so it must be >= 2")
        check_choice("head", self.head, HEADS)
        check_choice("queries", self.queries, QUERY_MODES)
        check_choice("bridge", self.bridge, BRIDGES)
        check_choice("encoder", self.encoder, ENCODERS)
        n = len(self.features_per_stage)
        if n < 2:
            raise ConfigError(f"features_per_stage has {n} stage(s); a UNet needs at least 2")
        self._validate_blocks(n)
        if any(f <= 0 for f in self.features_per_stage):
            raise ConfigError(f"features_per_stage must be positive, got {self.features_per_stage}")
        for name in ("kernel_sizes", "strides"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"{name} has {len(getattr(self, name))} entries but features_per_stage has {n}; "
                    "give one (D, H, W) triplet per stage"
                )
        if len(self.kernel_sizes[0]) != len(self.strides[0]):
            raise ConfigError(
                f"kernel_sizes has {len(self.kernel_sizes[0])}-axis entries but strides {len(self.strides[0])}-axis "
                "ones; give (H, W) pairs for a 2D network or (D, H, W) triplets for a 3D one in both"
            )
        if any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            raise ConfigError(f"kernel_sizes must be odd so padding keeps the size, got {self.kernel_sizes}")
        if any(s != 1 for s in self.strides[0]):
            raise ConfigError(f"strides[0] must be all ones (stage 0 is full resolution), got {self.strides[0]}")
        if self.num_queries is not None:
            check_positive_int("num_queries", self.num_queries)
            if self.head in FIXED_QUERY_HEADS and self.num_queries != self.num_classes:
                raise ConfigError(
                    f"num_queries is {self.num_queries} but head '{self.head}' has exactly one output "
                    f"per class ({self.num_classes}); leave num_queries unset"
                )
        if self.masked_attention and self.head != "decoupled":
            raise ConfigError(
                f"masked_attention needs head 'decoupled' (binary sigmoid masks to threshold), "
                f"got head '{self.head}'; set masked_attention to false"
            )
        if self.masked_attention and self.queries != "shared":
            raise ConfigError(
                "masked_attention needs queries 'shared': with 'per_stage' queries the previous "
                "stage's query i is not this stage's query i; set masked_attention to false"
            )
        if self.bridge != "none" and self.bridge_query_stages > n:
            raise ConfigError(f"bridge_query_stages is {self.bridge_query_stages} but the UNet has only {n} stages")
        for dim, heads, prefix in (
            (self.head_dim, self.head_heads, "head"),
            (self.bridge_dim, self.bridge_heads, "bridge"),
        ):
            if dim % heads:
                raise ConfigError(f"{prefix}_dim ({dim}) must be divisible by {prefix}_heads ({heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        self._validate_tasks()

    def _validate_tasks(self) -> None:
        bad = [v for v in self.instance_classes if not 1 <= v < self.num_classes]
        if bad:
            raise ConfigError(
                f"instance_classes has {bad}; instance classes are foreground label values 1..{self.num_classes - 1}"
            )
        if len(set(self.instance_classes)) != len(self.instance_classes):
            raise ConfigError(f"instance_classes {list(self.instance_classes)} lists a class twice")
        wanted = [
            name
            for name, on in (
                ("instance_classes", bool(self.instance_classes)),
                ("box_head", self.box_head),
                ("case_tasks", bool(self.case_tasks)),
            )
            if on
        ]
        if wanted and self.spatial_dims == 2:
            raise ConfigError(
                f"{', '.join(wanted)} are 3D only (instances, boxes and case tasks are not implemented for 2D "
                "networks); use a 3D configuration or leave them unset"
            )
        if wanted and self.head != "decoupled":
            raise ConfigError(
                f"{', '.join(wanted)} need head 'decoupled' (queries with their own class and mask), got head "
                f"'{self.head}'"
            )
        if self.instance_classes and self.num_queries is not None and self.num_queries <= self.num_classes:
            raise ConfigError(
                f"num_queries is {self.num_queries} but instance classes need more queries than classes "
                f"({self.num_classes}): one per semantic class plus one per instance; raise num_queries or "
                "leave it unset"
            )

    def _validate_blocks(self, n: int) -> None:
        blocks = self.n_blocks_per_stage
        if self.encoder == "plain":
            if blocks is not None:
                raise ConfigError(
                    f"n_blocks_per_stage is {blocks!r} but encoder is 'plain' (n_conv_per_stage sets its depth); "
                    "set encoder to 'residual' or leave n_blocks_per_stage unset"
                )
            return
        if blocks is None:
            raise ConfigError(
                f"encoder 'residual' needs n_blocks_per_stage, one block count per stage ({n} stages), "
                "e.g. nnU-Net ResEnc's [1, 3, 4, 6, 6, 6]"
            )
        if not isinstance(blocks, tuple) or len(blocks) != n:
            raise ConfigError(
                f"n_blocks_per_stage is {blocks!r}; give one block count per stage ({n} stages, as features_per_stage)"
            )
        for i, b in enumerate(blocks):
            check_positive_int(f"n_blocks_per_stage[{i}]", b)

    # ------------------------------------------------------------------ derived values
    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def spatial_dims(self) -> int:
        """2 for a 2D network ((H, W) kernels and strides), 3 for a 3D one."""
        return len(self.strides[0])

    @property
    def queries_count(self) -> int:
        """Q: the number of queries (mask/class pairs) the head predicts.

        Unset, Q = K (the paper's best, Table 6), plus ``INSTANCE_QUERIES_PER_CLASS`` per instance class.
        """
        if self.num_queries is not None:
            return self.num_queries
        return self.num_classes + INSTANCE_QUERIES_PER_CLASS * len(self.instance_classes)

    @property
    def decoupled(self) -> bool:
        """True when masks are sigmoid-binary and classes come from a K+1 classifier (Fig. 1f)."""
        return self.head == "decoupled"

    def total_strides(self) -> list[Triplet]:
        """Cumulative (D, H, W) (2D: (H, W)) downsampling factor of every stage, finest first."""
        out, acc = [], (1,) * self.spatial_dims
        for s in self.strides:
            acc = tuple(a * b for a, b in zip(acc, s))
            out.append(acc)
        return out

    def check_input_shape(self, spatial: tuple[int, ...]) -> None:
        """Raise ConfigError unless each axis of ``spatial`` ((D, H, W), or (H, W) in 2D) divides by the total
        stride."""
        total = self.total_strides()[-1]
        if len(spatial) != self.spatial_dims:
            raise ConfigError(
                f"input size {tuple(spatial)} has {len(spatial)} axes but the network is {self.spatial_dims}D"
            )
        bad = [f"{ax}={s} (stride {t})" for ax, s, t in zip("DHW"[-len(spatial) :], spatial, total) if s % t]
        if bad:
            raise ConfigError(
                f"input size {tuple(spatial)} is not divisible by the UNet's total stride {total}: "
                f"{', '.join(bad)}; pad or crop the patch to a multiple"
            )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, in_channels: int, num_classes: int, **overrides: Any) -> ModelConfig:
        """A named configuration.

        - ``paper``: full MaskMed (decoupled head, shared queries, masked attention, FSAD bridge)
          on nnU-Net's 6-stage 3D topology for an isotropic 128^3 patch (features 32..320).
          Use the planner's topology for anisotropic data (override kernel_sizes/strides).
        - ``tiny``: the same architecture shrunk to train in minutes on 2 CPU cores
          (4 stages, 8..64 features, 32-wide transformers); patches divisible by 8.
        """
        check_choice("preset", name, PRESETS)
        if name == "paper":
            base: dict[str, Any] = {}
        else:
            base = dict(
                features_per_stage=(8, 16, 32, 64),
                kernel_sizes=((3, 3, 3),) * 4,
                strides=((1, 1, 1),) + ((2, 2, 2),) * 3,
                head_dim=32,
                head_heads=4,
                head_ffn_dim=64,
                head_max_tokens=512,
                bridge_dim=32,
                bridge_heads=4,
                bridge_points=2,
                bridge_layers=1,
                bridge_ffn_dim=64,
            )
        base.update(overrides)
        if "bridge_query_stages" not in base:
            base["bridge_query_stages"] = default_bridge_query_stages(base.get("strides", cls.strides))
        # Masked attention only exists for the decoupled head with shared queries; an ablation
        # that switches those off without mentioning masked_attention means "without it".
        if "masked_attention" not in overrides and (
            base.get("head", "decoupled") != "decoupled" or base.get("queries", "shared") != "shared"
        ):
            base["masked_attention"] = False
        reject_unknown_keys(base, cls, f"preset '{name}' overrides")
        return cls(in_channels=in_channels, num_classes=num_classes, **base)
