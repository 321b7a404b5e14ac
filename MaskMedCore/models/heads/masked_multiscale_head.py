"""Masked Multi-Scale Segmentation Head and its query-based ablation variants (MaskMed §3.1-3.2).

One module covers the head rows of Table 3 that use queries (Fig. 1c-f), selected by ``variant``:

| variant         | mask embedding (per query)          | class embedding                    | composition |
|-----------------|-------------------------------------|------------------------------------|-------------|
| ``mlp_cls``       | 1x1x1 conv weights (static, Eq. 2) | MLP of learnable queries (static)  | coupled     |
| ``attn_cls``      | 1x1x1 conv weights (static, Eq. 3) | transformer + MLP -> K             | coupled     |
| ``attn_cls_mask`` | transformer + MLP (Eq. 4)          | transformer + MLP -> K             | coupled     |
| ``decoupled``     | transformer + MLP (Eq. 5)          | transformer + MLP -> classifier K+1| decoupled   |

Coupled heads mix mask logits into class logits (``sum_q M_cls[q, k] * mask_q``, softmax over
classes); the decoupled head predicts binary sigmoid masks and a K+1-way class per query.

Per decoder stage (coarsest first), a transformer block runs masked cross-attention to that
stage's average-pooled features, then self-attention, then an FFN (Mask2Former's order).
``queries="shared"`` starts one learnable query set at the coarsest stage and hands each stage's
output to the next (Table 4, "One query per model"); ``"per_stage"`` gives every stage its own set.
With ``masked_attention`` the previous stage's masks (sigmoid < 0.5, detached, resized to the
pooled grid) restrict cross-attention; a query whose mask is empty attends everywhere.
The mask embedding of stage s has C_s channels and is dotted directly with that stage's
decoder features, so the head adds no full-resolution projection.

Multi-task options (issue 12, decoupled head only), both absent from the state dict when off:
``box_head`` adds one 3-layer box MLP (DETR's ``bbox_embed``), shared by the stages as the class MLP is,
on each stage's decoder-normed queries; its sigmoid gives ``(cz, cy, cx, d, h, w)`` as fractions of the
input patch. ``case_task_classes`` adds a ``CaseClassificationHead`` reading the final stage's queries.

``spatial_dims=2`` makes the same head 2D (issue 13): (B, C_s, H_s, W_s) decoder features, 1x1 mask convs,
bilinear mask resizing, (B, Q, H_s, W_s) mask logits. The multi-task options stay 3D only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import spatial_ops
from MaskMedCore.layers.transformer_layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    unblock_empty_rows,
)
from MaskMedCore.models.heads.case_head import CaseClassificationHead
from MaskMedCore.models.heads.stage_memory import StageMemory
from MaskMedCore.models.outputs import MaskMedOutput

QUERY_VARIANTS = ("mlp_cls", "attn_cls", "attn_cls_mask", "decoupled")

_MASK_EINSUM = {3: "bqc,bcdhw->bqdhw", 2: "bqc,bchw->bqhw"}
"""Per-query mask embedding . stage features, by the number of spatial axes."""
_RESIZE_MODE = {3: "trilinear", 2: "bilinear"}


class StageBlock(nn.Module):
    """Masked cross-attention -> self-attention -> FFN (one transformer layer of the head)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.cross = CrossAttentionLayer(dim, heads, dropout)
        self.self_attn = SelfAttentionLayer(dim, heads, dropout)
        self.ffn = FFNLayer(dim, ffn_dim, dropout)

    def forward(
        self, x: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, blocked: Tensor | None
    ) -> Tensor:
        """x: (B, Q, E); memory: (B, N, E); blocked: (B, Q, N) bool or None -> (B, Q, E)."""
        x = self.cross(x, memory, query_pos, memory_pos, blocked)
        x = self.self_attn(x, query_pos)
        return self.ffn(x)


class MaskedMultiScaleHead(nn.Module):
    """Args:
    stage_channels: decoder channels per stage, coarsest first.
    num_queries: Q.
    num_classes: K (background included).
    variant: one of ``QUERY_VARIANTS``.
    shared_queries: one query set propagated upward (True) or one per stage (False).
    masked_attention: mask cross-attention with the previous stage's masks.
    dim: transformer width E.
    heads: attention heads.
    ffn_dim: FFN hidden width.
    layers_per_stage: transformer blocks per stage.
    max_tokens: cross-attention memory budget per stage.
    dropout: dropout in transformer layers.
    box_head: also predict one box per query and stage (variant ``decoupled`` only).
    case_task_classes: C_t per case-level task; non-empty adds the case head (variant ``decoupled`` only).
    spatial_dims: 3 for (D, H, W) decoder features, 2 for (H, W) ones (no box head or case tasks).
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        num_queries: int,
        num_classes: int,
        variant: str = "decoupled",
        shared_queries: bool = True,
        masked_attention: bool = True,
        dim: int = 192,
        heads: int = 8,
        ffn_dim: int = 1024,
        layers_per_stage: int = 1,
        max_tokens: int = 4096,
        dropout: float = 0.0,
        box_head: bool = False,
        case_task_classes: Sequence[int] = (),
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        conv = spatial_ops(spatial_dims).conv  # raises unless 2 or 3
        if variant not in QUERY_VARIANTS:
            raise ValueError(f"variant is {variant!r}; expected one of {QUERY_VARIANTS}")
        if masked_attention and (variant != "decoupled" or not shared_queries):
            raise ValueError("masked_attention needs variant 'decoupled' and shared queries")
        if (box_head or case_task_classes) and variant != "decoupled":
            raise ValueError(f"box_head and case tasks need variant 'decoupled', got {variant!r}")
        if (box_head or case_task_classes) and spatial_dims != 3:
            raise ValueError("box_head and case tasks are 3D only (boxes are (cz, cy, cx, d, h, w)); got a 2D head")
        self.spatial_dims = spatial_dims
        n = len(stage_channels)
        self.variant = variant
        self.shared = shared_queries
        self.masked_attention = masked_attention
        self.num_queries, self.num_classes = num_queries, num_classes
        self.uses_transformer = variant != "mlp_cls"
        self.mask_from_queries = variant in ("attn_cls_mask", "decoupled")
        n_sets = 1 if shared_queries else n
        # Content (state at layer 0) and positional embeddings of the queries, as Mask2Former.
        self.query_feat = nn.ModuleList(nn.Embedding(num_queries, dim) for _ in range(n_sets))
        if self.uses_transformer:
            self.query_pos = nn.ModuleList(nn.Embedding(num_queries, dim) for _ in range(n_sets))
            self.memories = nn.ModuleList(StageMemory(c, dim, max_tokens) for c in stage_channels)
            self.blocks = nn.ModuleList(
                nn.ModuleList(StageBlock(dim, heads, ffn_dim, dropout) for _ in range(layers_per_stage))
                for _ in range(n)
            )
            self.decoder_norm = nn.LayerNorm(dim)
        if self.mask_from_queries:
            self.mask_mlps = nn.ModuleList(MLP(dim, dim, c, n_layers=3) for c in stage_channels)
        else:
            self.mask_convs = nn.ModuleList(conv(c, num_queries, kernel_size=1) for c in stage_channels)
        if variant == "decoupled":
            self.class_mlp = MLP(dim, dim, dim, n_layers=2)
            self.classifier = nn.Linear(dim, num_classes + 1)
        elif variant == "mlp_cls":
            self.class_mlps = nn.ModuleList(MLP(dim, dim, num_classes, n_layers=2) for _ in range(n_sets))
        else:
            self.class_mlp = MLP(dim, dim, num_classes, n_layers=2)
        # Created only when asked for, so models without them keep their state-dict keys.
        self.box_head = box_head
        if box_head:
            self.box_mlp = MLP(dim, dim, 6, n_layers=3)
        self.case_head = (
            CaseClassificationHead(dim, heads, ffn_dim, case_task_classes, dropout) if case_task_classes else None
        )

    # ------------------------------------------------------------------ helpers
    def _queries(self, index: int, batch: int) -> tuple[Tensor, Tensor]:
        """Initial (content, positional) queries of set ``index``: two (B, Q, E) tensors."""
        feat = self.query_feat[index].weight.unsqueeze(0).expand(batch, -1, -1)
        pos = self.query_pos[index].weight.unsqueeze(0).expand(batch, -1, -1)
        return feat, pos

    def _blocked(self, prev_masks: Tensor | None, grid: tuple[int, ...]) -> Tensor | None:
        """(B, Q, N) True where the previous stage's mask says "not this query", or None."""
        if not self.masked_attention or prev_masks is None:
            return None
        mode = _RESIZE_MODE[len(grid)]
        resized = F.interpolate(prev_masks.detach().float(), size=grid, mode=mode, align_corners=False)
        blocked = resized.sigmoid().flatten(2) < 0.5  # (B, Q, D'H'W') or (B, Q, H'W')
        return unblock_empty_rows(blocked)

    def _class_outputs(self, hidden: Tensor | None, set_index: int, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (class_logits (B, Q, K+1), class_embeddings (B, Q, E_cls))."""
        if self.variant == "decoupled":
            emb = self.class_mlp(hidden)
            return self.classifier(emb), emb
        if self.variant == "mlp_cls":
            emb = self.class_mlps[set_index](self.query_feat[set_index].weight).unsqueeze(0).expand(batch, -1, -1)
        else:
            emb = self.class_mlp(hidden)
        # Coupled: the class embedding matrix M_cls (B, Q, K) with a zero "no object" column.
        return F.pad(emb, (0, 1)).to(like.dtype), emb

    # ------------------------------------------------------------------ forward
    def forward(self, features: list[Tensor], all_stages: bool = True) -> MaskMedOutput:
        """features: decoder outputs coarsest first; entry s (B, C_s, D_s, H_s, W_s) (2D: (B, C_s, H_s, W_s)).

        With ``all_stages`` False only the finest stage's masks are returned (inference); the
        coarser stages still run when the finest depends on them (shared queries, masked attention).
        """
        n = len(features)
        B = features[0].shape[0]
        needed = range(n) if (all_stages or self.shared or self.masked_attention) else [n - 1]
        masks, classes, boxes = [], [], []
        x = prev_masks = hidden = pos = None
        class_emb = mask_emb = None
        for s in needed:
            set_index = 0 if self.shared else s
            feats = features[s]
            if self.uses_transformer:
                init, pos = self._queries(set_index, B)
                if x is None or not self.shared:
                    x = init
                memory, memory_pos, grid = self.memories[s](feats)
                blocked = self._blocked(prev_masks, grid)
                for block in self.blocks[s]:
                    x = block(x, pos, memory, memory_pos, blocked)
                hidden = self.decoder_norm(x)
            if self.mask_from_queries:
                mask_emb = self.mask_mlps[s](hidden)  # (B, Q, C_s)
                mask_logits = torch.einsum(_MASK_EINSUM[self.spatial_dims], mask_emb, feats)
            else:
                mask_logits = self.mask_convs[s](feats)  # (B, Q, D_s, H_s, W_s) or (B, Q, H_s, W_s)
                mask_emb = self.mask_convs[s].weight.flatten(1).expand(B, -1, -1)
            cls_logits, class_emb = self._class_outputs(hidden, set_index, B, mask_logits)
            prev_masks = mask_logits
            if all_stages or s == n - 1:
                masks.append(mask_logits)
                classes.append(cls_logits)
                if self.box_head:
                    boxes.append(self.box_mlp(hidden).sigmoid())  # (B, Q, 6) (cz, cy, cx, d, h, w)
        return MaskMedOutput(
            class_logits=classes[-1],
            mask_logits=masks,
            stage_class_logits=classes,
            class_embeddings=class_emb,
            mask_embeddings=mask_emb,
            decoupled=self.variant == "decoupled",
            boxes=boxes[-1] if self.box_head else None,
            stage_boxes=boxes if self.box_head else None,
            case_logits=() if self.case_head is None else self.case_head(hidden, pos),
        )
