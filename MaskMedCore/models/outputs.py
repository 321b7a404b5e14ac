"""The typed network output and its conversion to per-class probabilities (MaskMed §3.1, Eq. 1-5).

Every head variant returns the same ``MaskMedOutput``. What ``class_logits`` means depends on
``decoupled``:

- **decoupled** (Fig. 1f, Eq. 5): ``class_logits[b, q]`` are K+1 logits (K classes + no-object);
  ``mask_logits`` are independent binary (sigmoid) mask logits. Per-class probabilities are
  ``sum_q softmax(class_logits)[..., :K] * sigmoid(mask)`` (Mask2Former's semantic inference),
  normalised over classes per voxel.
- **coupled** (Fig. 1b-e, Eq. 1-4, the nnU-Net family): ``class_logits[b, q, :K]`` is the class
  embedding matrix ``M_cls`` that mixes query masks into class logits, and ``class_logits[..., K]``
  is 0 (there is no no-object class). Per-class probabilities are
  ``softmax_k(sum_q M_cls[q, k] * mask_logit_q)``; for the point-wise head ``M_cls`` is the
  identity, which is exactly nnU-Net's softmax over a 1x1x1 conv.

A 2D network (issue 13) returns the same output with (B, Q, H, W) mask logits. Run on a (B, C, D, H, W)
volume it folds the D slices into the batch and unfolds its output with
:meth:`MaskMedOutput.slices_to_volume`: mask logits become (B, Q, D, H, W) like a 3D network's, while each
slice keeps its own queries, so per-query tensors hold ``query_slices = D`` query sets side by side
(``(B, D*Q, ...)``, slice-major). With D = 1 (sliding-window tiles of depth 1) that is exactly the layout
of a 3D network's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskMedOutput:
    """What a MaskMed network returns.

    Attributes:
        class_logits: (B, Q, K+1) float; final stage (see module docstring for coupled heads).
        mask_logits: per decoder stage, coarsest first; entry s is (B, Q, D_s, H_s, W_s) float
            logits ((B, Q, H_s, W_s) from a 2D network run on images); the last entry is at input
            resolution. With deep supervision off only the finest stage is present.
        stage_class_logits: (B, Q, K+1) per decoder stage, coarsest first, aligned with
            ``mask_logits`` (deep supervision of the class term, Eq. 6).
        class_embeddings: (B, Q, E_cls) per-query class embedding of the final stage (input of
            the classifier for transformer heads; ``M_cls`` for coupled heads).
        mask_embeddings: (B, Q, C_0) per-query mask embedding of the final stage, whose dot
            product with the finest decoder features gives the finest mask logits.
        decoupled: True for the decoupled head (sigmoid masks + K+1 classifier).
        boxes: (B, Q, 6) final-stage boxes of a model with a box head, else None: sigmoid
            ``(cz, cy, cx, d, h, w)``, centre and size as fractions of the input's (D, H, W).
        stage_boxes: (B, Q, 6) per decoder stage, coarsest first, aligned with ``mask_logits``
            (None without a box head).
        case_logits: one (B, C_t) tensor of logits per case-level task (``ModelConfig.case_tasks``,
            in that order); empty without a case head.
        query_slices: S, how many slices' query sets each batch item holds. 1 for a 3D network and
            for a 2D network run on images (or on volumes of depth 1). S = D after a 2D network ran on a
            (B, C, D, H, W) volume (:meth:`slices_to_volume`): every per-query tensor (``class_logits``,
            ``stage_class_logits``, ``class_embeddings``, ``mask_embeddings``) is then (B, S*Q, ...),
            entry ``d*Q + q`` being query q of slice d, and belongs to slice d of the mask logits
            (``mask_logits[s][:, q, d]``). :func:`semantic_probs` applies each slice's classes to its
            own slice.
    """

    class_logits: Tensor
    mask_logits: list[Tensor]
    stage_class_logits: list[Tensor]
    class_embeddings: Tensor
    mask_embeddings: Tensor
    decoupled: bool
    boxes: Tensor | None = None
    stage_boxes: list[Tensor] | None = None
    case_logits: tuple[Tensor, ...] = ()
    query_slices: int = 1

    @property
    def num_classes(self) -> int:
        """K: real classes, background included, no-object excluded."""
        return self.class_logits.shape[-1] - 1

    def slices_to_volume(self, batch: int, depth: int) -> MaskMedOutput:
        """The output of a 2D network run on ``batch * depth`` slices, as the output for ``batch`` volumes.

        The slices must be in (volume, slice) order, i.e. the (B, C, D, H, W) input folded as
        ``x.transpose(1, 2).reshape(B * D, C, H, W)``.

        - mask logits: (B*D, Q, H_s, W_s) -> (B, Q, D, H_s, W_s) (a view), the layout of a 3D network;
        - per-query tensors: (B*D, Q, ...) -> (B, D*Q, ...), slice d's queries at ``d*Q ... d*Q + Q - 1``,
          with ``query_slices = D`` (see the class docstring). For D = 1 nothing but the mask logits'
          new depth axis changes.

        Args:
            batch: B, the number of volumes.
            depth: D, slices per volume.

        Returns:
            The volume output.

        Raises:
            ValueError: if this is not a per-slice output of ``batch * depth`` images, or it has boxes or
                case logits (3D only).
        """
        if self.query_slices != 1 or any(m.dim() != 4 for m in self.mask_logits):
            raise ValueError(
                f"slices_to_volume needs the (B*D, Q, H, W) output of a 2D network, got mask logits of shape "
                f"{tuple(self.mask_logits[-1].shape)} with query_slices={self.query_slices}"
            )
        if self.class_logits.shape[0] != batch * depth:
            raise ValueError(
                f"the output has {self.class_logits.shape[0]} slices, expected batch x depth = {batch} x {depth}"
            )
        if self.boxes is not None or self.case_logits:
            raise ValueError("boxes and case logits are 3D only; a 2D network's output cannot carry them")

        def masks(t: Tensor) -> Tensor:
            # (B*D, Q, H, W) -> (B, D, Q, H, W) -> (B, Q, D, H, W)
            return t.view(batch, depth, *t.shape[1:]).transpose(1, 2)

        def queries(t: Tensor) -> Tensor:
            # (B*D, Q, X) -> (B, D*Q, X): slice-major, each slice's Q queries together
            return t.reshape(batch, depth * t.shape[1], *t.shape[2:])

        return MaskMedOutput(
            class_logits=queries(self.class_logits),
            mask_logits=[masks(m) for m in self.mask_logits],
            stage_class_logits=[queries(c) for c in self.stage_class_logits],
            class_embeddings=queries(self.class_embeddings),
            mask_embeddings=queries(self.mask_embeddings),
            decoupled=self.decoupled,
            query_slices=depth,
        )

    def take(self, index: slice | Tensor) -> MaskMedOutput:
        """The outputs of some batch items: every tensor indexed along its batch dim (dim 0).

        ``index`` is a slice (views) or a 1-D long tensor of item positions (copies, in that order).
        """
        if isinstance(index, slice):
            pick = lambda t: t[index]  # noqa: E731
        else:
            pick = lambda t: t.index_select(0, index.to(t.device))  # noqa: E731
        return MaskMedOutput(
            class_logits=pick(self.class_logits),
            mask_logits=[pick(m) for m in self.mask_logits],
            stage_class_logits=[pick(c) for c in self.stage_class_logits],
            class_embeddings=pick(self.class_embeddings),
            mask_embeddings=pick(self.mask_embeddings),
            decoupled=self.decoupled,
            boxes=None if self.boxes is None else pick(self.boxes),
            stage_boxes=None if self.stage_boxes is None else [pick(b) for b in self.stage_boxes],
            case_logits=tuple(pick(c) for c in self.case_logits),
            query_slices=self.query_slices,
        )

    @staticmethod
    def concat(outputs: list[MaskMedOutput]) -> MaskMedOutput:
        """Join outputs of the same network along the batch dim, in list order."""
        if not outputs:
            raise ValueError("concat needs at least one output")
        first = outputs[0]
        if any(o.query_slices != first.query_slices for o in outputs):
            raise ValueError(f"cannot join outputs of different query_slices {[o.query_slices for o in outputs]}")
        return MaskMedOutput(
            class_logits=torch.cat([o.class_logits for o in outputs]),
            mask_logits=[torch.cat(parts) for parts in zip(*(o.mask_logits for o in outputs), strict=True)],
            stage_class_logits=[
                torch.cat(parts) for parts in zip(*(o.stage_class_logits for o in outputs), strict=True)
            ],
            class_embeddings=torch.cat([o.class_embeddings for o in outputs]),
            mask_embeddings=torch.cat([o.mask_embeddings for o in outputs]),
            decoupled=first.decoupled,
            boxes=None if first.boxes is None else torch.cat([o.boxes for o in outputs]),
            stage_boxes=None
            if first.stage_boxes is None
            else [torch.cat(parts) for parts in zip(*(o.stage_boxes for o in outputs), strict=True)],
            case_logits=tuple(torch.cat(parts) for parts in zip(*(o.case_logits for o in outputs), strict=True)),
            query_slices=first.query_slices,
        )


_QUERY_MIX = {
    (3, 5): "bqk,bqdhw->bkdhw",  # one query set for the whole volume (3D network)
    (3, 4): "bqk,bqhw->bkhw",  # 2D network on images
    (4, 5): "bdqk,bqdhw->bkdhw",  # 2D network on a volume: slice d's classes weight slice d's masks
}


def _mix_queries(class_weights: Tensor, masks: Tensor) -> Tensor:
    """``sum_q class_weights[.., q, k] * masks[:, q]`` per voxel: (B, K, D, H, W) or (B, K, H, W)."""
    key = (class_weights.dim(), masks.dim())
    if key not in _QUERY_MIX:
        raise ValueError(
            f"class weights of shape {tuple(class_weights.shape)} do not fit mask logits of shape "
            f"{tuple(masks.shape)}; expected (B, Q, K) with (B, Q, [D,] H, W) masks, or per-slice (B, D, Q, K) "
            "with (B, Q, D, H, W) masks"
        )
    return torch.einsum(_QUERY_MIX[key], class_weights, masks)


def coupled_class_logits(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-voxel class logits of a coupled head, ``sum_q M_cls[q, k] * mask_logit_q``.

    Args:
        class_logits: (B, Q, K+1), the class embedding matrix with a zero last column; or (B, D, Q, K+1),
            one matrix per slice d of the masks (a 2D network run on a volume).
        mask_logits: (B, Q, D, H, W), or (B, Q, H, W) from a 2D network run on images.

    Returns:
        (B, K, D, H, W) (2D: (B, K, H, W)) class logits.
    """
    return _mix_queries(class_logits[..., :-1], mask_logits)


def decoupled_class_probs(class_logits: Tensor, mask_logits: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-voxel class probabilities of the decoupled head.

    ``p[b, k] = sum_q softmax(cls[b, q])[k] * sigmoid(mask[b, q])`` over the K real classes (the
    no-object column is dropped, as Mask2Former does), then divided by the per-voxel sum so the
    K values sum to 1 (as PLAN's 3D port does; argmax is unchanged). A voxel no query covers
    gets equal probabilities.

    Args:
        class_logits: (B, Q, K+1) logits; or (B, D, Q, K+1), one set per slice d of the masks.
        mask_logits: (B, Q, D, H, W) logits, or (B, Q, H, W) from a 2D network run on images.

    Returns:
        (B, K, D, H, W) (2D: (B, K, H, W)) float probabilities.
    """
    class_prob = class_logits.float().softmax(-1)[..., :-1]  # (B, [D,] Q, K)
    scores = _mix_queries(class_prob, mask_logits.float().sigmoid())
    total = scores.sum(1, keepdim=True)
    k = scores.shape[1]
    return torch.where(total > eps, scores / total.clamp_min(eps), torch.full_like(scores, 1.0 / k))


def semantic_probs(out: MaskMedOutput, stage: int = -1) -> Tensor:
    """Per-class probabilities ``(B, K, D, H, W)`` (2D network on images: ``(B, K, H, W)``) of one decoder
    stage (default: the finest).

    Background is class 0; ``argmax`` over dim 1 gives the label map. An output with ``query_slices`` S > 1
    (a 2D network run on a volume) applies slice d's query classes to slice d only.
    """
    cls = out.class_logits if stage == -1 else out.stage_class_logits[stage]
    masks = out.mask_logits[stage]
    if out.query_slices > 1:
        B, SQ, K1 = cls.shape
        S = out.query_slices
        cls = cls.reshape(B, S, SQ // S, K1)  # (B, S*Q, K+1) -> (B, S, Q, K+1), slice-major
    if out.decoupled:
        return decoupled_class_probs(cls, masks)
    return coupled_class_logits(cls.float(), masks.float()).softmax(1)
